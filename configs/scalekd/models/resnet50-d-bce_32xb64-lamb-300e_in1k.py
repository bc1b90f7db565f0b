# What the ScaleKD reference's "advanced" ResNet-50 actually is: a ResNet-50-D (deep stem, average-
# pooling shortcut; mmpretrain's ResNetV1d) trained with a sigmoid binary cross-entropy on one-hot
# labels (its MultiLabelLinearClsHead with CrossEntropyLoss(use_sigmoid=True)). Recipe as
# resnet50_32xb64-lamb-300e_in1k.py. Top-1 is read from the sigmoid scores (same argmax as the
# logits). KD is computed on the logits, as in the reference.
_base_ = ['./resnet50_32xb64-lamb-300e_in1k.py']
model = dict(
    backbone=dict(type='ResNetV1d'),
    head=dict(
        _delete_=True,
        type='MultiLabelLinearClsHead',
        num_classes=1000,
        in_channels=2048,  # the ResNet-50 width (a classifier definition)
        loss=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)))
