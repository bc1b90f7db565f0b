# Mask R-CNN with a plain ViT backbone on COCO, in ViTDet's setting (Li et al., 2022): a simple
# feature pyramid (strides 4-32 from the stride-16 map, P6 by pooling), large-scale jitter at
# 1024 x 1024, AdamW, drop path, 100 epochs at batch 64. The backbone is a distilled ViT-B/16
# (DeiT-B: e.g. the student of ViTKD, DeiT3-L -> DeiT-B; or of ScaleKD, Swin-L -> ViT-B/16) as
# mmpretrain builds it; its 224 px position embedding is resized to the 64 x 64 grid when the
# checkpoint loads.
# Differences from ViTDet (see README.md): global attention in every block (mmpretrain's ViT has no
# window attention), mmdet's Mask R-CNN heads without LayerNorm, no layer-wise LR decay.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py', 'mmdet::common/lsj-100e_coco-instance.py']
custom_imports = dict(imports=['mmkd_ext', 'mmpretrain.models'], allow_failed_imports=False)

# The student exported by tools/export_student.py (tools/finetune_student.py sets it). Override:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
image_size = (1024, 1024)
embed_dims = 768

model = dict(
    data_preprocessor=dict(
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    backbone=dict(
        _delete_=True,
        type='mmpretrain.VisionTransformer',
        arch='deit-base',
        img_size=image_size,
        patch_size=16,
        drop_path_rate=0.1,
        out_type='featmap',
        init_cfg=dict(type='Pretrained', checkpoint='student.pth', prefix='backbone.')),
    neck=dict(
        _delete_=True,
        type='mmkd_ext.SimpleFeaturePyramid',
        in_channels=embed_dims,
        out_channels=256,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        num_outs=5))

# 100 epochs of COCO train2017 without repeating the set (the 184,375 iterations of ViTDet at
# batch 64), LR steps at about 89 % and 96 % of the schedule as in ViTDet.
max_epochs = 100
train_dataloader = dict(
    batch_size=8,
    num_workers=4,
    dataset=dict(_delete_=True, **_base_.train_dataloader.dataset.dataset))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=10)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        custom_keys={
            'backbone.pos_embed': dict(decay_mult=0.),
            'backbone.cls_token': dict(decay_mult=0.),
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(
        type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[89, 96], gamma=0.1)
]
default_hooks = dict(checkpoint=dict(interval=10, max_keep_ckpts=2))
auto_scale_lr = dict(base_batch_size=64)
