# NKD alone, DeiT3-S (ImageNet-21K pre-trained) -> DeiT-T, ImageNet-1K. Published (cls_KD's
# nkd.md): 74.42 -> 76.68. The authors' config is cls_KD's deit-s3_distill_deit-t_img.py with
# vitkd=False, nkd=True: T 1, gamma 1.0, added to the student's CE at weight 1, the argmax of the
# mixed label in both terms (soft_labels='argmax'). Teacher, data and schedule: the ViTKD config of
# the same pair (DeiT recipe, Mixup/CutMix on as in the authors' runs).
_base_ = ['../vitkd/deit3-s-in21k_vitkd_deit-t_4xb256-300e_in1k.py']
model = dict(methods=[dict(type='NKDLoss', tau=1.0, gamma=1.0, soft_labels='argmax')])
