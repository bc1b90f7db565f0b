# ViTKD + NKD, DeiT3-L (IN-21K) -> DeiT-B. Published: 85.41.
_base_ = ['./deit3-l-in21k_vitkd_deit-b_16xb64-300e_in1k.py']
model = dict(methods=[
    dict(type='ViTKDLoss', alpha=3e-5, beta=3e-6, mask_ratio=0.5, reduction='sum'),
    # cls_KD's NKD under Mixup/CutMix: the argmax of the mixed label in both terms.
    dict(type='NKDLoss', tau=1.0, gamma=1.0, soft_labels='argmax'),
])
