# OFA's CIFAR-100 schedule for CNN students (OFAKD configs/cifar/cnn.yaml with train.py defaults):
# 300 epochs; SGD with Nesterov momentum 0.9 (timm's 'sgd'), lr 0.05, weight decay 2e-3 on
# every parameter of more than one dimension (timm exempts 1-D ones: biases, norms); 3 warm-up
# epochs from 1e-4, then cosine to 1e-3; the LR changes once per epoch (timm steps it by epoch).
# OFA ran it on 8 GPUs x 128 images (README), PAT on 1 GPU x 128 (its command_cifar.sh); neither
# scales the LR with the batch. The configs set auto_scale_lr to their own total batch.
# As timm, the cosine spans all 300 epochs and the linear warm-up (reaching the peak at epoch 3)
# overlays its start: the chained schedulers give timm's LR within 0.01 % of the peak at every
# epoch (checked numerically against timm's formula).
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=2e-3, nesterov=True),
    paramwise_cfg=dict(flat_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4 / 0.05, by_epoch=True, begin=0, end=4),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=300, eta_min=1e-3),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
