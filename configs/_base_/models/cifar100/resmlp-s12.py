# ResMLP-S12 for CIFAR-100 at 224 px (a student of OFA/PAT: timm's resmlp_12_224; 12 layers, 384
# dims, patch 16), mmkd_ext's ResMLP backbone (mmpretrain has none). Stage taps:
# backbone.layers.1, .3, .9, .11 (tokens (B, 196, 384), no class token). Mixup 0.8 / CutMix 1.0
# with label smoothing 0.1 as OFA's ViT/MLP recipe; pair with ../../datasets/
# cifar100_bs128_randaug.py and ../../schedules/cifar100_adamw_300e.py.
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(type='mmkd_ext.ResMLP', arch='s12', img_size=224, patch_size=16),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=384,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=None,
        topk=(1, 5)),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8),
                             dict(type='CutMix', alpha=1.0)]),
    data_preprocessor=dict(
        num_classes=100,
        mean=[129.311, 124.058, 112.430],
        std=[68.162, 65.382, 70.431],
        to_rgb=False),
)
