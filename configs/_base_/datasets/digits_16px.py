# The digits upscaled to 16x16 by the dataset (bilinear) for the demo ViTs: patch 4 then gives a
# 4x4 grid of patch tokens instead of 2x2.
_base_ = ['./digits.py']

train_pipeline = [
    dict(type='RandomResizedCrop', scale=16, crop_ratio_range=(0.7, 1.0)),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(img_size=16, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(img_size=16))
test_dataloader = val_dataloader
