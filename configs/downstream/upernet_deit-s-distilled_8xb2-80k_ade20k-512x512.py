# UPerNet on ADE20K from a distilled DeiT-S: mmseg's UPerNet DeiT-S recipe whose 42.96 mIoU
# ViTKD reports as its baseline (8 GPUs x 2 images, 80k iterations, 512x512 crops, AdamW; the
# UPerHead takes the four 1/16 maps of blocks 3, 6, 9, 12 directly, without a neck), with the
# student's own backbone type (mmpretrain's VisionTransformer), so the exported weights load key
# for key (the 224 px position embedding is resized to the 32x32 grid of 512 px on loading).
# ViTKD (DeiT3-B teacher): 42.96 -> 44.94 mIoU.
_base_ = ['mmseg::vit/vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py']
custom_imports = dict(imports=['mmpretrain.models', 'mmkd_ext'], allow_failed_imports=False)

# The student exported by tools/export_student.py (tools/finetune_student.py sets it). Override:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmpretrain.VisionTransformer',
        arch='deit-small',
        img_size=(512, 512),
        patch_size=16,
        out_indices=(2, 5, 8, 11),
        out_type='featmap',
        final_norm=False,  # as mmseg's ViT in this recipe
        drop_path_rate=0.1,
        interpolate_mode='bicubic',
        init_cfg=dict(type='Pretrained', checkpoint='student.pth', prefix='backbone.')))
