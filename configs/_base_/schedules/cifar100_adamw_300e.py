# OFA's CIFAR-100 schedule for ViT and MLP students (OFAKD configs/cifar/vit_mlp.yaml): 300 epochs;
# AdamW lr 5e-4, weight decay 0.05 on every parameter of more than one dimension (timm exempts 1-D
# ones: biases, norms, layer-scale vectors); gradient-norm clipping 5; 20 warm-up epochs
# from 5e-7, then cosine to 1e-5; the LR changes once per epoch (timm steps it by epoch).
# OFA ran it on 8 GPUs x 128 images (README), PAT on 1 GPU x 128 (its command_cifar.sh); neither
# scales the LR with the batch. The configs set auto_scale_lr to their own total batch.
# As timm, the cosine spans all 300 epochs and the linear warm-up (reaching the peak at epoch 20)
# overlays its start: the chained schedulers give timm's LR within 1 % of the peak during the
# warm-up and 0.02 % after it (checked numerically against timm's formula).
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=5e-4, weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8),
    paramwise_cfg=dict(flat_decay_mult=0.0),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=5e-7 / 5e-4, by_epoch=True, begin=0, end=21),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=300, eta_min=1e-5),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
