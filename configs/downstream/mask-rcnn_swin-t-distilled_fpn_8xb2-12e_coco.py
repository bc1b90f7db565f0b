# Mask R-CNN Swin-T-FPN 1x on COCO, mmdet's own recipe (mask-rcnn_swin-t-p4-w7_fpn_1x_coco), with a
# distilled mmpretrain Swin-T as the backbone (e.g. the student of ScaleKD, Swin-L -> Swin-T). The
# backbone is mmpretrain's SwinTransformer, the class the student was trained as, so the exported
# weights load by name without conversion; it is the same network as mmdet's Swin-T (window 7,
# drop path 0.2, padding of maps to whole windows).
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']
custom_imports = dict(imports=['mmkd_ext', 'mmpretrain.models'], allow_failed_imports=False)

# The student exported by tools/export_student.py (tools/finetune_student.py sets it). Override:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.SwinTransformer',
        arch='tiny',
        img_size=224,
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        pad_small_map=True,
        init_cfg=dict(type='Pretrained', checkpoint='student.pth', prefix='backbone.')),
    neck=dict(in_channels=[96, 192, 384, 768]))
