# ScaleKD, "advanced" recipe (Table 3): Swin-L (86.24) -> ViT-B/16, 300 epochs. The student's
# recipe is mmpretrain's DeiT-B (deit-base_16xb64_in1k): AdamW lr 1e-3 at batch 16 x 64 = 1024,
# weight decay 0.05, 20 warm-up epochs, cosine, label smoothing, RandAugment, random erasing,
# Mixup 0.8 / CutMix 1.0 (kept on: the distiller runs the student's batch augments for both
# networks), gradient clip 5, EMA (mmengine's EMAHook). Taps: block 9 (layers.8) and the last
# block after the final norm (ln1), as 14x14 maps (the class token dropped).
# the student's data, schedule and runtime
_base_ = ['mmpretrain::deit/deit-base_16xb64_in1k.py']
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student='mmpretrain::deit/deit-base_16xb64_in1k.py',
    teacher='mmpretrain::swin_transformer/swin-large_16xb64_in1k.py',
    teacher_checkpoint=('https://download.openmmlab.com/mmclassification/v0/swin-transformer/'
                        'convert/swin_large_patch4_window7_224_22kto1k-5f0996db.pth'),
    student_loss_weight=0.5,
    input_shape=(3, 224, 224),
    methods=[
        dict(
            type='ScaleKDLoss',
            student_taps=dict(
                stage3='backbone.layers.8',
                stage4='backbone.ln1',
                logits='head',
                grid='backbone.patch_embed'),
            teacher_taps=dict(final='backbone.norm3', stage3='backbone.stages.2', logits='head'),
            softmax_scale=(5.0, 5.0),
            dir_weight=0.08,
            alt_weight=0.06,
            kd_weight=0.5,
            tau=1.0)
    ],
)
# Teacher check: Swin-L IN-21K 86.24 (mmpretrain's metafile, swin-large_in21k-pre-3rdparty_in1k).
# mmpretrain's DeiT-B EMA is kept beside the teacher check (a list here replaces the base's).
custom_hooks = [
    dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL'),
    dict(type='mmkd_ext.TeacherCheckHook', expected_top1=86.24)
]
