# DeiT's own distillation: RegNetY-16GF -> DeiT-S with a distillation token, ImageNet-1K.
# Published (DeiT README, "DeiT-small distilled"): 81.2 top-1. Loss, recipe: as the DeiT-Ti config.
_base_ = ['./regnety-16gf_deit-distill_deit-t_4xb256-300e_in1k.py']
model = dict(student='{{ fileDirname }}/models/deit-small-distilled_trainable.py')
