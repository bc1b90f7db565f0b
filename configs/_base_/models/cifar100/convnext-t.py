# ConvNeXt-T for CIFAR-100 at 224 px (a teacher of OFA/PAT: timm's convnext_tiny). Stage taps:
# backbone.stages.0 ... backbone.stages.3 (96/192/384/768 ch at 56/28/14/7 px); with
# out_indices=(3,) mmpretrain normalises only the pooled final features (gap_before_final_norm).
# drop_path_rate 0: timm's default for convnext_tiny (OFA sets none).
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ConvNeXt', arch='tiny', drop_path_rate=0.0),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=768,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=None,
        topk=(1, 5)),
    init_cfg=dict(type='TruncNormal', layer=['Conv2d', 'Linear'], std=.02, bias=0.),
    data_preprocessor=dict(
        num_classes=100,
        mean=[129.311, 124.058, 112.430],
        std=[68.162, 65.382, 70.431],
        to_rgb=False),
)
