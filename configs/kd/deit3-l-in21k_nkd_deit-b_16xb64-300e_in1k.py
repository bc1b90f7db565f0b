# NKD alone, DeiT3-L (ImageNet-21K pre-trained) -> DeiT-B, ImageNet-1K. Published (cls_KD's
# nkd.md): 81.76 -> 84.96 (its config link for this row points to the DeiT-T config). NKD in
# cls_KD's deit-l3_distill_deit-b_img.py: T 1, gamma 1.0, added to the student's CE at weight 1,
# the argmax of the mixed label in both terms (soft_labels='argmax'). Teacher, data and schedule:
# the ViTKD config of the same pair (DeiT-B recipe, 16 GPUs x 64, Mixup/CutMix on as in the
# authors' runs).
_base_ = ['../vitkd/deit3-l-in21k_vitkd_deit-b_16xb64-300e_in1k.py']
model = dict(methods=[dict(type='NKDLoss', tau=1.0, gamma=1.0, soft_labels='argmax')])
