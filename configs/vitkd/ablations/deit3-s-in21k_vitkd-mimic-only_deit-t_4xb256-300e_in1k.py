# Ablation (ViTKD Table 6): mimicking only (shallow layers).
# Published: 75.12 (DeiT-S teacher) / 75.31 (DeiT3-S teacher).
# beta = 0 drops the generation term and its taps: the teacher stops after block 1.
_base_ = ['../deit3-s-in21k_vitkd_deit-t_4xb256-300e_in1k.py']
model = dict(methods=[dict(type='ViTKDLoss', alpha=3e-5, beta=0.0, reduction='sum')])
