# The demo ViT teacher: 4 blocks of width 64, 4 heads, patch 4 on the digits upscaled to 16x16 (a
# 4x4 grid of 16 patch tokens + the cls token), 0.14 M params; all 1,347 train images, 40 epochs.
_base_ = [
    '../_base_/datasets/digits_16px.py', '../_base_/schedules/digits_adamw_40e.py',
    '../_base_/digits_runtime.py'
]
model = dict(
    type='ImageClassifier',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone=dict(
        type='VisionTransformer',
        arch=dict(embed_dims=64, num_layers=4, num_heads=4, feedforward_channels=128),
        img_size=16,
        patch_size=4,
        in_channels=1,
        drop_path_rate=0.0),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=10,
        in_channels=64,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
)
