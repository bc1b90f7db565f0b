# DeiT's own distillation (Touvron et al., ICML 2021): RegNetY-16GF -> DeiT-Ti with a distillation
# token, ImageNet-1K. Published (DeiT README, "DeiT-tiny distilled"): 74.5 top-1.
# Loss (DeiT's hard distillation, alpha 0.5): 0.5 * CE(class head, label) + 0.5 * CE(distillation
# head, teacher's top-1): student_loss_weight=0.5 (TrainableDeiTClsHead: label smoothing 0.1 on the
# class head, the mixed label under Mixup/CutMix) and DeiTDistillationLoss(loss_weight=0.5).
# Evaluation: the mean of both heads (DeiT's inference). Recipe: DeiT's code (main.py defaults),
# where it differs from mmpretrain's DeiT config: 5 warm-up epochs (not 20), no gradient clipping
# (not 5), repeated augmentation, drop path 0.1, no weight decay on the distillation token.
_base_ = ['mmpretrain::deit/deit-tiny-distilled_4xb256_in1k.py']
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student='{{ fileDirname }}/models/deit-tiny-distilled_trainable.py',
    teacher='{{ fileDirname }}/models/regnety-16gf_timm_in1k.py',
    teacher_checkpoint='https://dl.fbaipublicfiles.com/deit/regnety_160-a5fe301d.pth',
    student_loss_weight=0.5,
    input_shape=(3, 224, 224),
    # The teacher's logits are the output of the timm model inside TimmClassifier (`model`).
    methods=[dict(type='DeiTDistillationLoss', loss_weight=0.5, teacher_taps=dict(logits='model'))],
)

# 4 GPUs x 256 = 1024 images per step (lr 5e-4 * 1024 / 512 = 1e-3, as DeiT scales it), repeated
# augmentation (3 repeats); RandAugment, random erasing 0.25, Mixup 0.8 / CutMix 1.0 from the base.
train_dataloader = dict(batch_size=256, sampler=dict(type='RepeatAugSampler', shuffle=True))
optim_wrapper = dict(
    clip_grad=None, paramwise_cfg=dict(custom_keys={'.dist_token': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
auto_scale_lr = dict(base_batch_size=1024)
# Teacher check before the first epoch: the DeiT paper's RegNetY-16GF teacher "reaches 82.9% top-1
# accuracy on ImageNet"; evaluated here as the students are (256 px bicubic resize, 224 crop).
custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook', expected_top1=82.9)]
