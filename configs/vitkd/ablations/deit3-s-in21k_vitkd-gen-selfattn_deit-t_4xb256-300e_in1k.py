# Ablation (ViTKD Table 7): the generative block is a self-attention block, generation only.
# Published: 74.61 (DeiT-S) / 74.65 (DeiT3-S); conv block (gen-only config): 74.72 / 74.79.
_base_ = ['../deit3-s-in21k_vitkd_deit-t_4xb256-300e_in1k.py']
model = dict(methods=[
    dict(
        type='ViTKDLoss',
        alpha=0.0,
        beta=3e-6,
        mask_ratio=0.5,
        reduction='sum',
        generator=dict(type='MaskedGenerativeBlock', variant='self_attention'))
])
