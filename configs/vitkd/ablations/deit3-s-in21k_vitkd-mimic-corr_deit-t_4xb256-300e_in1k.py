# Ablation (ViTKD Table 8): shallow alignment by the N x N correlation matrix F F^T / sqrt(D)
# (no projector), mimicking only.
# Published: 74.94 (DeiT-S teacher) / 75.01 (DeiT3-S teacher); linear: 75.31 / 75.15.
_base_ = ['../deit3-s-in21k_vitkd_deit-t_4xb256-300e_in1k.py']
model = dict(
    methods=[dict(type='ViTKDLoss', alpha=3e-5, beta=0.0, mimic='correlation', reduction='sum')])
