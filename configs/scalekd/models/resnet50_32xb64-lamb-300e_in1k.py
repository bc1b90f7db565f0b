# ResNet-50 with the ScaleKD reference's "advanced" recipe (its resnet50_8xb32_in1k_strong_aug_
# coslr_300.py): bicubic random resized crop, flip, RandAugment (timm increasing, 2 ops, magnitude
# 7 of 8, std 0.5), random erasing 0.25; LAMB lr 5e-3, weight decay 0.02, batch 32 x 64 = 2048,
# linear warm-up from 0.25x over 5 epochs, cosine over the remaining 295, gradient clip 5; 300
# epochs. No Mixup/CutMix (none in the reference recipe).
# This file is the plain ResNet-50 with cross-entropy. The reference's own file of that name builds
# a ResNet-50-D (ResNetV1d) with a sigmoid BCE loss: that one is
# resnet50-d-bce_32xb64-lamb-300e_in1k.py.
_base_ = [
    'mmpretrain::_base_/models/resnet50.py',
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/default_runtime.py',
]

bgr_mean = [103.53, 116.28, 123.675]
bgr_std = [57.375, 57.12, 58.395]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=8,
        magnitude_level=7,
        magnitude_std=0.5,
        hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=bgr_mean,
        fill_std=bgr_std),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(
    optimizer=dict(type='Lamb', lr=5e-3, weight_decay=0.02), clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.25,
        by_epoch=True,
        begin=0,
        end=5,
        convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=295, by_epoch=True, begin=5, end=300),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=2048)
