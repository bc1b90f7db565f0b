# CIFAR-100 as the OFA recipe for ViT and MLP students (OFAKD configs/cifar/vit_mlp.yaml): the CNN
# recipe's data (cifar100_bs128.py: 224 px, 128 images per GPU, same val/test) plus RandAugment
# rand-m9-mstd0.5-inc1 and random erasing 0.25 ('pixel' mode: per-pixel normal noise). timm applies
# no colour jitter when RandAugment is on. Mixup 0.8 / CutMix 1.0 are batch augments of the student
# model (train_cfg.augments in configs/_base_/models/cifar100/deit-t.py and resmlp-s12.py).
_base_ = ['./cifar100_bs128.py']

_mean = [129.311, 124.058, 112.430]
_std = [68.162, 65.382, 70.431]
train_pipeline = [
    dict(
        type='RandomResizedCrop',
        scale=224,
        crop_ratio_range=(0.08, 1.0),
        aspect_ratio_range=(3. / 4., 4. / 3.),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[round(x) for x in _mean], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=_mean,
        fill_std=_std),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
