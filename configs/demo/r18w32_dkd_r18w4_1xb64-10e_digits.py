# DKD with its CIFAR settings (alpha 1, beta 8, T 4) and a 2-epoch warm-up of its weight.
_base_ = ['./r18w32_kd_r18w4_1xb64-10e_digits.py']
model = dict(
    methods=[dict(type='DKDLoss', alpha=1.0, beta=8.0, tau=4.0, warmup_epochs=2)])
