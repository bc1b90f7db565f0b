# CIFAR-100 as the OFA recipe for CNN students (OFAKD configs/cifar/cnn.yaml, timm 0.6.5 loaders):
# the 32 px images are upsampled to the 224 px input of ImageNet-style models.
# Batch: 128 images per GPU, as OFA's (and PAT's) CIFAR recipes.
# train: RandomResizedCrop to 224 (scale 0.08-1, ratio 3/4-4/3; timm draws bilinear or bicubic at
#   random, here bicubic), horizontal flip 0.5; no colour jitter (cnn.yaml sets 0), no RandAugment,
#   no random erasing, no Mixup/CutMix (cifar100_bs128_randaug.py has the ViT/MLP-student recipe).
# val/test: resize the short edge to 256 (224 / crop_pct 0.875, timm's default for ResNet18,
#   MobileNetV2, ResMLP-S12; DeiT-T's 0.9 would give 248) and centre-crop 224.
# Normalisation: OFA's CIFAR-100 mean/std (0.5071, 0.4865, 0.4409) / (0.2673, 0.2564, 0.2762) x 255.
# mmpretrain's CIFAR100 yields RGB arrays: no channel flip.
dataset_type = 'CIFAR100'
data_preprocessor = dict(
    num_classes=100, mean=[129.311, 124.058, 112.430], std=[68.162, 65.382, 70.431], to_rgb=False)

train_pipeline = [
    dict(
        type='RandomResizedCrop',
        scale=224,
        crop_ratio_range=(0.08, 1.0),
        aspect_ratio_range=(3. / 4., 4. / 3.),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]

test_pipeline = [
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    dataset=dict(
        type=dataset_type,
        data_root='data/cifar100',
        split='train',
        download=False,
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)

val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    dataset=dict(
        type=dataset_type,
        data_root='data/cifar100',
        split='test',
        download=False,
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, 5))

test_dataloader = val_dataloader
test_evaluator = val_evaluator
