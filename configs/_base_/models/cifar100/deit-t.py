# DeiT-T/16 for CIFAR-100 at 224 px (a student of OFA/PAT: timm's deit_tiny_patch16_224, no
# distillation token; 192 dims, 12 blocks, 3 heads). Stage taps: backbone.layers.1, .3, .9, .11
# (tokens (B, 1 + 196, 192), class token first). Mixup 0.8 / CutMix 1.0 with label smoothing 0.1
# as OFA's ViT/MLP recipe (configs/cifar/vit_mlp.yaml); pair with ../../datasets/
# cifar100_bs128_randaug.py and ../../schedules/cifar100_adamw_300e.py.
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionTransformer', arch='deit-tiny', img_size=224, patch_size=16,
        drop_path_rate=0.0),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=100,
        in_channels=192,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=.02),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
    ],
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8),
                             dict(type='CutMix', alpha=1.0)]),
    data_preprocessor=dict(
        num_classes=100,
        mean=[129.311, 124.058, 112.430],
        std=[68.162, 65.382, 70.431],
        to_rgb=False),
)
