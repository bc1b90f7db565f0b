# DKD, DeiT-S teacher -> DeiT-T student, ImageNet-1K, DeiT recipe. cls_KD's settings: alpha 1,
# beta 0.5, T 1, with DKD's linear warm-up of the weight over the first 20 epochs.
_base_ = ['../vitkd/deit-s_vitkd_deit-t_4xb256-300e_in1k.py']
model = dict(
    methods=[dict(type='DKDLoss', alpha=1.0, beta=0.5, tau=1.0, warmup_epochs=20)])
