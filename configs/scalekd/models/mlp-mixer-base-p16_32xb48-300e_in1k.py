# MLP-Mixer-B/16 with the ScaleKD reference's Mixer recipe (its mlp-mixer-base-p16_64xb64_in1k.py
# and imagenet_bs128_mlp_224.py). mmpretrain has no Mixer training recipe: its Mixer configs
# evaluate converted weights and borrow ViT's batch-4096 pre-training schedule. Recipe: bicubic
# random resized crop, flip, RandAugment (timm increasing, 2 ops, magnitude 12 of 15, std 0.5),
# random erasing 0.25, no Mixup/CutMix; drop path 0.1; AdamW lr 7e-4, weight decay 0.067, batch
# 32 x 48 = 1536, linear warm-up over 20 epochs, cosine over the remaining 280; gradient clip 1;
# 300 epochs. The warm-up starts at 1e-3 x lr where the reference starts at 1e-6 x lr: its first
# updates (lr 7e-10) are below float32 resolution for weights near 1 (LayerNorm gains do not move);
# the two schedules differ by less than 0.1 % of the lr at every step.
_base_ = [
    'mmpretrain::_base_/models/mlp_mixer_base_patch16.py',
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/default_runtime.py',
]
model = dict(backbone=dict(drop_rate=0.0, drop_path_rate=0.1))

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
        total_level=15,
        magnitude_level=12,
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
train_dataloader = dict(batch_size=48, dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=7e-4, weight_decay=0.067), clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        begin=0,
        end=20,
        convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=280, by_epoch=True, begin=20, end=300),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=1536)
