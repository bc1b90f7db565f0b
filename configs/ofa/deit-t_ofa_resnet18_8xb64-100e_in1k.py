# OFA (Hao et al., NeurIPS 2023), DeiT-T teacher -> ResNet-18 student, ImageNet-1K. Published:
# 71.34 (OFA paper). OFA's ImageNet recipe for CNN students (OFAKD configs/imagenet/cnn.yaml and
# its README command): 8 GPUs x 64 images, 100 epochs, SGD (Nesterov, momentum 0.9) lr 0.1 not
# scaled with the batch, weight decay 1e-4 on parameters of more than one dimension, 3 warm-up
# epochs from 1e-4, then the LR x 0.1 every 30 epochs (changed once per epoch); cross-entropy with
# label smoothing 0.1; RandomResizedCrop 224 + flip, no colour jitter; eps 1.5, branches on
# layer1-4, loss weights 1, temperature 1.
_base_ = ['mmpretrain::_base_/datasets/imagenet_bs64.py', 'mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

model = dict(
    type='mmkd_ext.Distiller',
    student=dict(
        type='ImageClassifier',
        _scope_='mmpretrain',
        backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(3, ), style='pytorch'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=1000,
            in_channels=512,
            loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
            topk=(1, 5))),
    # The DeiT-T of the DeiT release (timm's deit_tiny_patch16_224), as mmpretrain converted it.
    teacher='mmpretrain::deit/deit-tiny_4xb256_in1k.py',
    teacher_checkpoint=('https://download.openmmlab.com/mmclassification/v0/deit/'
                        'deit-tiny_pt-4xb256_in1k_20220218-13b382a0.pth'),
    input_shape=(3, 224, 224),
    methods=[
        dict(
            type='OFALoss',
            eps=1.5,
            temperature=1.0,
            loss_weight=1.0,
            head_weight=1.0,
            student_taps=dict(
                stages=['backbone.layer1', 'backbone.layer2', 'backbone.layer3', 'backbone.layer4'
                        ]))
    ],
)

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True),
    paramwise_cfg=dict(flat_decay_mult=0.0))
param_scheduler = [
    # timm's LRs exactly: 1e-4, 0.0334, 0.0667 in epochs 0-2, 0.1 from epoch 3, x 0.1 at epochs 30,
    # 60 and 90 (MMEngine counts milestones from the scheduler's `begin`).
    dict(type='LinearLR', start_factor=1e-4 / 0.1, by_epoch=True, begin=0, end=4),
    dict(type='MultiStepLR', by_epoch=True, begin=4, milestones=[26, 56, 86], gamma=0.1),
]
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=512)

# Evaluate the teacher on the val set before training; stop if it is > 1 point below its published
# top-1: DeiT-T 74.50 (mmpretrain's metafile, deit-tiny_4xb256_in1k).
custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook', expected_top1=74.5)]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3))
