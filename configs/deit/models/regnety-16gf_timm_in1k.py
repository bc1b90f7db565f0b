# RegNetY-16GF, the teacher of DeiT's distillation: timm's `regnety_160` through mmpretrain's
# TimmClassifier (mmpretrain has no RegNetY), with the weights DeiT published
# (https://dl.fbaipublicfiles.com/deit/regnety_160-a5fe301d.pth, set as `teacher_checkpoint` in
# the distillation configs). Needs `pip install timm`. Input: ImageNet mean/std, RGB, 224 px (the
# same normalisation as the DeiT students, so the teacher reads the student's batch as it is).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/default_runtime.py',
]
model = dict(
    type='TimmClassifier',
    model_name='regnety_160',
    pretrained=False,
    num_classes=1000,
    data_preprocessor=dict(
        num_classes=1000, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True),
)
