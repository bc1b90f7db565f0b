# Mask R-CNN R50-FPN 1x on COCO, mmdet's own recipe, with a distilled ResNet-50-D (deep stem,
# average-pooling shortcuts: mmpretrain's ResNetV1d) as the backbone: the network of ScaleKD's
# published ResNet-50 (configs/scalekd/swin-l_scalekd_resnet50-d-bce_32xb64-300e_in1k.py).
# mmdet's own ResNetV1d names its deep stem differently, so the backbone is mmpretrain's class, the
# one the student was trained as, with mmdet's settings (first stage frozen, BN statistics fixed).
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmkd_ext', 'mmpretrain.models'], allow_failed_imports=False)

# The student exported by tools/export_student.py (tools/finetune_student.py sets it). Override:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.ResNetV1d',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='student.pth', prefix='backbone.')))
