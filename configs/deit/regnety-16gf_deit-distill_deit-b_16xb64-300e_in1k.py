# DeiT's own distillation: RegNetY-16GF -> DeiT-B with a distillation token, ImageNet-1K.
# Published (DeiT README, "DeiT-base distilled"): 83.4 top-1. Loss and recipe as the DeiT-Ti config;
# DeiT trained it on 16 GPUs x 64 (the same total batch 1024 and lr 1e-3).
_base_ = ['./regnety-16gf_deit-distill_deit-t_4xb256-300e_in1k.py']
model = dict(student='{{ fileDirname }}/models/deit-base-distilled_trainable.py')
train_dataloader = dict(batch_size=64)
