# Ablation (ViTKD Table 7): the generative block is a cross-attention block (queries: all tokens,
# keys/values: the visible ones), generation only. Published: 73.77 (DeiT-S) / 73.98 (DeiT3-S).
_base_ = ['../deit3-s-in21k_vitkd_deit-t_4xb256-300e_in1k.py']
model = dict(methods=[
    dict(
        type='ViTKDLoss',
        alpha=0.0,
        beta=3e-6,
        mask_ratio=0.5,
        reduction='sum',
        generator=dict(type='MaskedGenerativeBlock', variant='cross_attention'))
])
