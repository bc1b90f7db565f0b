# The demo CNN student: the teacher's ResNet-18 at width 4 (final 32 channels), 44 k params, trained
# on 150 labelled digits (15 a class, the same for every seed) while the teacher saw all 1,347.
# 80 epochs of 3 iterations (about the teacher's 210 iterations).
_base_ = ['./resnet18-w32_1xb64-10e_digits.py']
model = dict(
    backbone=dict(stem_channels=4, base_channels=4),
    head=dict(in_channels=32),
)
train_dataloader = dict(dataset=dict(subset_size=150))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.1,
        by_epoch=True,
        begin=0,
        end=1,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        by_epoch=True,
        begin=1,
        end=80,
        eta_min=0.0,
        convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=80, val_interval=80)
