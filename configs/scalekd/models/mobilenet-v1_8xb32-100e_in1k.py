# MobileNet-V1 1.0 (224 px) with the ScaleKD reference's "traditional" recipe: mmpretrain's plain
# ResNet ImageNet pipeline (random resized crop, flip), SGD lr 0.1, momentum 0.9, weight decay
# 1e-4, batch 8 x 32 = 256, cosine over 100 epochs. mmpretrain has no MobileNet-V1: the backbone is
# mmkd_ext's (mmkd_ext/models/backbones/mobilenet_v1.py). The head has label smoothing 0.1: the
# reference's traditional distillation config builds its student from its mobilenet_v1_refine.py,
# whose head has it.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs32.py',
    'mmpretrain::_base_/schedules/imagenet_bs256_coslr.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='mmkd_ext.MobileNetV1'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=1024,  # the MobileNet-V1 1.0 width (a classifier definition)
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, loss_weight=1.0),
        topk=(1, 5)),
)
