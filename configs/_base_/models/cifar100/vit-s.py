# ViT-S/16 for CIFAR-100 at 224 px (a teacher of OFA/PAT: timm's vit_small_patch16_224, 384 dims,
# 12 blocks, 6 heads = mmpretrain's 'deit-small' arch; class-token head after the final norm).
# Stage taps: backbone.layers.1, .3, .9, .11 (tokens (B, 1 + 196, 384), class token first).
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionTransformer',
        arch='deit-small',
        img_size=224,
        patch_size=16,
        drop_path_rate=0.0),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=100,
        in_channels=384,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=.02),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
    ],
    data_preprocessor=dict(
        num_classes=100,
        mean=[129.311, 124.058, 112.430],
        std=[68.162, 65.382, 70.431],
        to_rgb=False),
)
