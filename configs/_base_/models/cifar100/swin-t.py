# Swin-T (patch 4, window 7) for CIFAR-100 at 224 px (a teacher of OFA/PAT: timm's
# swin_tiny_patch4_window7_224). Stage taps (the spec's blocks 1, 3, 9, 11 counted across the
# model): backbone.stages.0.blocks.1, backbone.stages.1.blocks.1, backbone.stages.2.blocks.5,
# backbone.stages.3.blocks.1 (tokens (B, L, C)). drop_path_rate 0.1: timm's default for Swin.
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(type='SwinTransformer', arch='tiny', img_size=224, drop_path_rate=0.1),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=768,
        init_cfg=None,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.)
    ],
    data_preprocessor=dict(
        num_classes=100,
        mean=[129.311, 124.058, 112.430],
        std=[68.162, 65.382, 70.431],
        to_rgb=False),
)
