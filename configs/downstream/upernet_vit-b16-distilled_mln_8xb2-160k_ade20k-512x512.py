# UPerNet on ADE20K from a distilled ViT-B/16: mmseg's UPerNet ViT-B/16 recipe with its
# MultiLevelNeck (the four 1/16 maps of blocks 3, 6, 9, 12 resized to 1/4, 1/8, 1/16, 1/32), whose
# 46.75 mIoU ScaleKD reports as its baseline (8 GPUs x 2 images, 160k iterations, 512x512 crops,
# AdamW), with the student's own backbone type (mmpretrain's VisionTransformer), so the exported
# weights load key for key (the 224 px position embedding is resized to 512 px on loading).
# ScaleKD (Swin-L teacher): 46.75 -> 50.84 mIoU.
_base_ = ['mmseg::vit/vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmpretrain.models', 'mmkd_ext'], allow_failed_imports=False)

# The student exported by tools/export_student.py (tools/finetune_student.py sets it). Override:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmpretrain.VisionTransformer',
        arch='b',
        img_size=(512, 512),
        patch_size=16,
        out_indices=(2, 5, 8, 11),
        out_type='featmap',
        final_norm=False,  # as mmseg's ViT in this recipe
        drop_path_rate=0.0,
        interpolate_mode='bicubic',
        init_cfg=dict(type='Pretrained', checkpoint='student.pth', prefix='backbone.')))
