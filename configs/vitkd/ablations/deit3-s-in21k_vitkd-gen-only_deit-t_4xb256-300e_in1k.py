# Ablation (ViTKD Table 6): generation only (deep layer).
# Published: 74.72 (DeiT-S teacher) / 74.79 (DeiT3-S teacher).
_base_ = ['../deit3-s-in21k_vitkd_deit-t_4xb256-300e_in1k.py']
model = dict(
    methods=[dict(type='ViTKDLoss', alpha=0.0, beta=3e-6, mask_ratio=0.5, reduction='sum')])
