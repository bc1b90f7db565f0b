# ScaleKD (Table 3): Swin-L (86.24) -> Swin-T, 300 epochs. The student's recipe is mmpretrain's
# Swin-T (swin-tiny_16xb64_in1k): AdamW lr 1e-3 at batch 16 x 64 = 1024, Mixup 0.8 / CutMix 1.0
# (kept on), RandAugment, random erasing, label smoothing, drop path 0.2. Taps: stage 3 (stages.2,
# 384 @ 14x14) and the final norm (norm3, 768 @ 7x7). Reference settings for Swin-T: softmax scale
# 1, 24 and 48 CAP heads, LayerNorm in the CAP stems.
# the student's data, schedule and runtime
_base_ = ['mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py']
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student='mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py',
    teacher='mmpretrain::swin_transformer/swin-large_16xb64_in1k.py',
    teacher_checkpoint=('https://download.openmmlab.com/mmclassification/v0/swin-transformer/'
                        'convert/swin_large_patch4_window7_224_22kto1k-5f0996db.pth'),
    student_loss_weight=0.5,
    input_shape=(3, 224, 224),
    methods=[
        dict(
            type='ScaleKDLoss',
            student_taps=dict(
                stage3='backbone.stages.2',  # (tokens, (h, w)): carries its own grid
                stage4='backbone.norm3',  # plain tokens, laid on the grid of stages.3
                logits='head',
                grid='backbone.stages.3'),
            teacher_taps=dict(final='backbone.norm3', stage3='backbone.stages.2', logits='head'),
            softmax_scale=(1.0, 1.0),
            num_heads=(24, 48),
            projector=dict(stem_norm='LN'),  # the reference runs its ConvNeXt CAPs for Swin-T
            dir_weight=0.08,
            alt_weight=0.06,
            kd_weight=0.5,
            tau=1.0)
    ],
)
# Teacher check: Swin-L IN-21K 86.24 (mmpretrain's metafile, swin-large_in21k-pre-3rdparty_in1k).
custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook', expected_top1=86.24)]
