# UPerNet on ADE20K from a distilled ResNet-50-D (deep stem, average-pooling shortcuts:
# mmpretrain's ResNetV1d), the network of ScaleKD's published ResNet-50
# (configs/scalekd/swin-l_scalekd_resnet50-d-bce_32xb64-300e_in1k.py): mmseg's UPerNet R50 recipe
# (4 GPUs x 4 images, 160k iterations, 512x512 crops) with the student's own class, so the exported
# weights load key for key (mmseg's ResNetV1d names its deep stem otherwise).
# ScaleKD (Swin-L teacher): 42.37 -> 44.50 mIoU.
_base_ = ['mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmpretrain.models', 'mmkd_ext'], allow_failed_imports=False)

# The student exported by tools/export_student.py (tools/finetune_student.py sets it). Override:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
model = dict(
    pretrained=None,  # mmseg's ImageNet ResNetV1c: replaced by the distilled student
    backbone=dict(
        _delete_=True,
        type='mmpretrain.ResNetV1d',
        depth=50,
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='student.pth', prefix='backbone.')))
