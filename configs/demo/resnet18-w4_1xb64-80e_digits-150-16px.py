# The demo CNN student at 16 px (for ScaleKD with the 16 px ViT teacher): the ResNet-18-w4 student
# (CIFAR stem, 44 k params, 150 labelled digits, 80 epochs) on the digits upscaled to 16x16, so its
# layer3 map (16 @ 4x4) sits on the ViT teacher's 4x4 patch grid.
_base_ = ['./resnet18-w4_1xb64-80e_digits-150.py']
train_pipeline = [
    dict(type='RandomResizedCrop', scale=16, crop_ratio_range=(0.7, 1.0)),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(img_size=16, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(img_size=16))
test_dataloader = val_dataloader
