# DKD, DeiT-S teacher -> DeiT-T student, ImageNet-1K, DeiT recipe. The settings of the authors'
# DeiT configs (cls_KD, configs/distillers/imagenet/deit-s_distill_deit-t_img.py): alpha 1,
# beta 0.5, T 1, added to the student's CE at weight 1, no warm-up. mdistiller's ImageNet setting
# (ResNet-34 -> ResNet-18: beta 0.5, T 1, WARMUP 1) is the same: with epochs counted from 1 its
# warm-up factor min(epoch / 1, 1) is 1 from the first epoch. (A 20-epoch warm-up, beta 8 and T 4
# are mdistiller's CIFAR-100 setting.) Under Mixup/CutMix the target class is the argmax of the
# mixed label: our extension, the reference takes integer labels only.
_base_ = ['../vitkd/deit-s_vitkd_deit-t_4xb256-300e_in1k.py']
model = dict(methods=[dict(type='DKDLoss', alpha=1.0, beta=0.5, tau=1.0, warmup_epochs=1)])
