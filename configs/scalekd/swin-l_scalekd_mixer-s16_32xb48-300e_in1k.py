# ScaleKD (Table 3): Swin-L (86.24) -> MLP-Mixer-S/16, 300 epochs, the reference's Mixer recipe
# (models/mlp-mixer-small-p16_32xb48-300e_in1k.py). Taps: layer 5 of 8 and the last layer after the
# final norm (ln1), 14x14 maps on the patch grid (the reference's out_indices [-7, -5, -3, -1],
# features 2 and 3).
# the student's data, schedule and runtime
_base_ = ['./models/mlp-mixer-small-p16_32xb48-300e_in1k.py']
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student='{{ fileDirname }}/models/mlp-mixer-small-p16_32xb48-300e_in1k.py',
    teacher='mmpretrain::swin_transformer/swin-large_16xb64_in1k.py',
    teacher_checkpoint=('https://download.openmmlab.com/mmclassification/v0/swin-transformer/'
                        'convert/swin_large_patch4_window7_224_22kto1k-5f0996db.pth'),
    student_loss_weight=0.5,
    input_shape=(3, 224, 224),
    methods=[
        dict(
            type='ScaleKDLoss',
            student_taps=dict(
                stage3='backbone.layers.5',
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
custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook', expected_top1=86.24)]
