# ResNet-18 for CIFAR-100 at 224 px, as OFA/PAT use it (timm's ImageNet ResNet-18: 7x7 stride-2 stem
# and max pooling, not the CIFAR variant), so stages give 56, 28, 14, 7 px maps at 224 px input.
# Stage taps: backbone.layer1 ... backbone.layer4. Cross-entropy with label smoothing 0.1 (OFA).
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(3, ), style='pytorch'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=512,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)),
    data_preprocessor=dict(
        num_classes=100,
        mean=[129.311, 124.058, 112.430],
        std=[68.162, 65.382, 70.431],
        to_rgb=False),
)
