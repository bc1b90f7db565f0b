# OFA (Hao et al., NeurIPS 2023), ConvNeXt-T teacher -> ResMLP-S12 student, CIFAR-100 at 224 px.
# Published: 81.22 (OFA paper, CIFAR-100 table; PAT's comparison quotes it).
# OFA's recipe for ViT/MLP students (OFAKD configs/cifar/vit_mlp.yaml, see the dataset and
# schedule files); eps 1.0 on CIFAR-100 (--ofa-eps 1.0), branches on all four student stages,
# loss weights 1 (branches and the student's own logits), temperature 1, and the student's
# cross-entropy with label smoothing 0.1.
# Teacher: OFA's released CIFAR-100 teacher (timm format), converted with
# tools/model_converters/timm_to_mmpretrain.py (see README.md).
_base_ = [
    '../_base_/datasets/cifar100_bs128_randaug.py', '../_base_/schedules/cifar100_adamw_300e.py',
    'mmpretrain::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)
# 8 GPUs x 128 images (OFA's README); OFA does not scale the LR (auto_scale_lr is off by default).
auto_scale_lr = dict(base_batch_size=1024)

model = dict(
    type='mmkd_ext.Distiller',
    student='{{ fileDirname }}/../_base_/models/cifar100/resmlp-s12.py',
    teacher='{{ fileDirname }}/../_base_/models/cifar100/convnext-t.py',
    teacher_checkpoint='checkpoints/cifar100/convnext-t_cifar100.pth',
    input_shape=(3, 224, 224),
    methods=[
        dict(
            type='OFALoss',
            eps=1.0,
            temperature=1.0,
            loss_weight=1.0,
            head_weight=1.0,
            student_taps=dict(stages=[
                'backbone.layers.1', 'backbone.layers.3', 'backbone.layers.9', 'backbone.layers.11'
            ]))
    ],
)
# Logs the teacher's top-1 on the test split before training (no published value to hold it to).
custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook')]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=3, save_best='auto'))
