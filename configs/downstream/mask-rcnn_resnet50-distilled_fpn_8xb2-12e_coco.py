# Mask R-CNN R50-FPN 1x on COCO, mmdet's own recipe, with a distilled ResNet-50 as the backbone
# (e.g. the student of ScaleKD, Swin-L -> ResNet-50). mmpretrain's and mmdet's ResNet share their
# parameter names, so the exported student loads as it is.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

# The student exported by tools/export_student.py (tools/finetune_student.py sets it). Override:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='student.pth', prefix='backbone.')))
