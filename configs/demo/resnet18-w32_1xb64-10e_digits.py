# The demo teacher: ResNet-18 (CIFAR stem, keeps 8x8), width 32 (final 256 channels), 2.8 M params.
_base_ = [
    '../_base_/datasets/digits.py', '../_base_/schedules/digits_sgd_10e.py',
    '../_base_/digits_runtime.py'
]
model = dict(
    type='ImageClassifier',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone=dict(type='ResNet_CIFAR', depth=18, in_channels=1, stem_channels=32, base_channels=32),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=256,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
)
