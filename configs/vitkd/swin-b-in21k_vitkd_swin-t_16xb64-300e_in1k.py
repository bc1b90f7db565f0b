# ViTKD, Swin-B (IN-21K) -> Swin-T. Published: 81.18 -> 81.70.
# Swin has no cls token and no single token sequence: its stages work at 4 resolutions and widths.
# The analogue of ViTKD's taps: mimic the outputs of the first two stages (each stage returns
# (tokens, (h, w)); teacher and student stages share the grid, widths are projected), generate the
# last stage after its norm (backbone.norm3, tokens on a 7x7 grid given by backbone.stages.3).
_base_ = ['mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py']
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

swin_taps = dict(shallow=['backbone.stages.0', 'backbone.stages.1'], deep='backbone.norm3')
model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student='mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py',
    teacher='mmpretrain::swin_transformer/swin-base_16xb64_in1k.py',
    teacher_checkpoint=('https://download.openmmlab.com/mmclassification/v0/swin-transformer/'
                        'convert/swin_base_patch4_window7_224_22kto1k-f967f799.pth'),
    input_shape=(3, 224, 224),
    methods=[
        dict(
            type='ViTKDLoss',
            alpha=3e-5,
            beta=3e-6,
            mask_ratio=0.5,
            reduction='sum',
            student_taps=dict(swin_taps, grid='backbone.stages.3'),
            teacher_taps=swin_taps)
    ],
)
# Teacher check: Swin-B IN-21K 85.16 (mmpretrain's metafile, swin-base_in21k-pre-3rdparty_in1k).
custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook', expected_top1=85.16)]
