# MobileNetV2 (width 1.0) for CIFAR-100 at 224 px (timm's mobilenetv2_100 as OFA/PAT use it).
# Stage taps (the spec's blocks 2, 5, 12, 17 of timm's flattened block list): backbone.layer2
# (24 ch, 56 px), backbone.layer3 (32 ch, 28 px), backbone.layer5 (96 ch, 14 px), backbone.conv2
# (1280 ch, 7 px). Cross-entropy with label smoothing 0.1 (OFA).
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(type='MobileNetV2', widen_factor=1.0),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=1280,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)),
    data_preprocessor=dict(
        num_classes=100,
        mean=[129.311, 124.058, 112.430],
        std=[68.162, 65.382, 70.431],
        to_rgb=False),
)
