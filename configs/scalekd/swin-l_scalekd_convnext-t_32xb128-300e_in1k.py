# ScaleKD (Table 3): Swin-L (86.24) -> ConvNeXt-T, 300 epochs. The student's recipe is
# mmpretrain's ConvNeXt-T (convnext-tiny_32xb128_in1k): AdamW lr 4e-3 at batch 32 x 128 = 4096,
# Mixup 0.8 / CutMix 1.0 (kept on), RandAugment, random erasing, label smoothing, EMA. Taps: C4 and
# C5 (stages.2, 384 @ 14x14; stages.3, 768 @ 7x7). The reference's ConvNeXt settings differ from its
# ResNet ones: softmax scale 1, 8 and 16 CAP heads, LayerNorm in the CAP stems.
# the student's data, schedule and runtime
_base_ = ['mmpretrain::convnext/convnext-tiny_32xb128_in1k.py']
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student='mmpretrain::convnext/convnext-tiny_32xb128_in1k.py',
    teacher='mmpretrain::swin_transformer/swin-large_16xb64_in1k.py',
    teacher_checkpoint=('https://download.openmmlab.com/mmclassification/v0/swin-transformer/'
                        'convert/swin_large_patch4_window7_224_22kto1k-5f0996db.pth'),
    student_loss_weight=0.5,
    input_shape=(3, 224, 224),
    methods=[
        dict(
            type='ScaleKDLoss',
            student_taps=dict(
                stage3='backbone.stages.2', stage4='backbone.stages.3', logits='head'),
            teacher_taps=dict(final='backbone.norm3', stage3='backbone.stages.2', logits='head'),
            softmax_scale=(1.0, 1.0),
            num_heads=(8, 16),
            projector=dict(stem_norm='LN'),  # channel LayerNorm in the CAP stems (ConvNeXt)
            dir_weight=0.08,
            alt_weight=0.06,
            kd_weight=0.5,
            tau=1.0)
    ],
)
# Teacher check: Swin-L IN-21K 86.24 (mmpretrain's metafile, swin-large_in21k-pre-3rdparty_in1k).
# mmpretrain's ConvNeXt-T EMA is kept beside the teacher check (a list here replaces the base's).
custom_hooks = [
    dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL'),
    dict(type='mmkd_ext.TeacherCheckHook', expected_top1=86.24)
]
