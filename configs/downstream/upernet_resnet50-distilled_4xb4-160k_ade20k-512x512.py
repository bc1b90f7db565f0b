# UPerNet on ADE20K from a distilled plain ResNet-50 (e.g. configs/scalekd/
# swin-l_scalekd_resnet50_32xb64-300e_in1k.py): mmseg's UPerNet R50 recipe (4 GPUs x 4 images,
# 160k iterations, 512x512 crops) with the student's own backbone type (mmpretrain's ResNet), so
# the exported weights load key for key. No published number: ScaleKD's 42.37 -> 44.50 is its
# ResNet-50-D (upernet_resnet50-d-distilled_4xb4-160k_ade20k-512x512.py).
_base_ = ['mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmpretrain.models', 'mmkd_ext'], allow_failed_imports=False)

# The student exported by tools/export_student.py (tools/finetune_student.py sets it). Override:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
model = dict(
    pretrained=None,  # mmseg's ImageNet ResNetV1c: replaced by the distilled student
    backbone=dict(
        _delete_=True,
        type='mmpretrain.ResNet',
        depth=50,
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='student.pth', prefix='backbone.')))
