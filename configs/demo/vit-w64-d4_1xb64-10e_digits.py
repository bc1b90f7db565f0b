# The demo ViT teacher: 4 blocks of width 64, 4 heads, patch 4 on the 8x8 digits (a 2x2 grid of 4
# patch tokens + the cls token), about 0.14 M params. Patch 4 on 8x8 trained to 97 % in 10 epochs;
# patch 2 (4x4 grid) or 16x16 resized inputs stayed near 50-87 % in the same budget.
_base_ = [
    '../_base_/datasets/digits.py', '../_base_/schedules/digits_adamw_10e.py',
    '../_base_/digits_runtime.py'
]
model = dict(
    type='ImageClassifier',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone=dict(
        type='VisionTransformer',
        arch=dict(embed_dims=64, num_layers=4, num_heads=4, feedforward_channels=128),
        img_size=8,
        patch_size=4,
        in_channels=1,
        drop_path_rate=0.0),
    neck=None,
    head=dict(type='VisionTransformerClsHead', num_classes=10, in_channels=64,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
)
