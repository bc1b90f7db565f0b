# UPerNet on ADE20K from a distilled Swin-T: mmseg's UPerNet Swin-T recipe (8 GPUs x 2 images,
# 160k iterations, 512x512 crops, AdamW) with the student's own backbone type (mmpretrain's
# SwinTransformer), so the exported weights load key for key. ScaleKD (Swin-L teacher):
# 44.41 -> 46.33 mIoU (44.41 is mmseg's UPerNet Swin-T with ImageNet-1K weights).
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmpretrain.models', 'mmkd_ext'], allow_failed_imports=False)

# The student exported by tools/export_student.py (tools/finetune_student.py sets it). Override:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmpretrain.SwinTransformer',
        arch='tiny',
        img_size=224,  # the classification size: sets the window layout of the weights
        window_size=7,
        pad_small_map=True,  # as mmseg's Swin: maps smaller than a window are padded, not refused
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='student.pth', prefix='backbone.')))
