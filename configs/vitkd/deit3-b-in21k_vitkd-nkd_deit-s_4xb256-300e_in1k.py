# ViTKD + NKD, DeiT3-B (IN-21K) -> DeiT-S. Published: 83.59.
_base_ = ['./deit3-b-in21k_vitkd_deit-s_4xb256-300e_in1k.py']
model = dict(methods=[
    dict(type='ViTKDLoss', alpha=3e-5, beta=3e-6, mask_ratio=0.5, reduction='sum'),
    # cls_KD's NKD under Mixup/CutMix: the argmax of the mixed label in both terms.
    dict(type='NKDLoss', tau=1.0, gamma=1.0, soft_labels='argmax'),
])
