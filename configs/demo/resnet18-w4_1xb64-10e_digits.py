# The demo student: the same ResNet-18 at width 4 (final 32 channels), 44 k params.
_base_ = ['./resnet18-w32_1xb64-10e_digits.py']
model = dict(
    backbone=dict(stem_channels=4, base_channels=4),
    head=dict(in_channels=32),
)
