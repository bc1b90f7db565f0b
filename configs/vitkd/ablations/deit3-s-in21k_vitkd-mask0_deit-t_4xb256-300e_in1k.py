# Ablation (ViTKD Table 10): mask ratio 0 (0.5 in the main config, 76.06), DeiT3-S -> DeiT-T.
# Published: 75.77.
# Ratio 0 masks nothing: the generation loss covers every token, not divided by the ratio.
_base_ = ['../deit3-s-in21k_vitkd_deit-t_4xb256-300e_in1k.py']
model = dict(methods=[dict(type='ViTKDLoss', alpha=3e-5, beta=3e-6, mask_ratio=0, reduction='sum')])
