# CaiT-S24 at 224 (timm's `cait_s24_224` weights), the SpectralKD teacher for the DeiT students.
# mmpretrain has no CaiT: the backbone is mmkd_ext's (mmkd_ext/models/backbones/cait.py). Weights:
# convert timm's checkpoint once with
#   python tools/model_converters/timm_cait_to_mmkd.py cait_s24_224.pth
# checkpoints/cait-s24_in1k.pth
# Evaluation as timm evaluates it: bicubic resize to 224, no extra crop margin (crop_pct 1.0).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='mmkd_ext.CaiT', arch='s24', img_size=224, patch_size=16),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=384,  # the CaiT-S24 width (a classifier definition, as in mmpretrain's configs)
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
)

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=224, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
