# NKD, DeiT-S teacher -> DeiT-T student, ImageNet-1K, DeiT recipe (the student's mmpretrain config:
# 300 epochs, AdamW lr 1e-3 at total batch 1024, Mixup/CutMix kept, as in cls_KD). NKD's DeiT
# settings: T 1, gamma 1.0, added to the student's CE at weight 1 (cls_KD), and the argmax of the
# mixed label in both terms (cls_KD's nkd.py: soft_labels='argmax').
_base_ = ['../vitkd/deit-s_vitkd_deit-t_4xb256-300e_in1k.py']
model = dict(methods=[dict(type='NKDLoss', tau=1.0, gamma=1.0, soft_labels='argmax')])
