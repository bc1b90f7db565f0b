# DKD with the reference ImageNet settings (alpha 0.5, beta 0.5, T 1, 1 warm-up epoch). The CIFAR
# settings (beta 8, T 4: 128x the KL) diverged on the digits at SGD lr 0.1 (30 % top-1, seed 0).
_base_ = ['./r18w32_kd_r18w4_1xb64-80e_digits-150.py']
model = dict(methods=[dict(type='DKDLoss', alpha=0.5, beta=0.5, tau=1.0, warmup_epochs=1)])
