# ViTKD, DeiT3-L (IN-21K) -> DeiT-B. Published: 81.76 -> 83.46.
# DeiT-B's mmpretrain recipe is 16 GPUs x 64 = the same total batch 1024 and lr 1e-3.
# The teacher has 24 blocks: ViTKD still takes its first two and its last (after the final norm).
_base_ = ['mmpretrain::deit/deit-base_16xb64_in1k.py']
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student='mmpretrain::deit/deit-base_16xb64_in1k.py',
    # mmpretrain's DeiT3-L config with mmkd_ext's DeiT3 backbone (see README.md, "DeiT3 teachers").
    teacher='{{ fileDirname }}/models/deit3-large-p16_in1k.py',
    teacher_checkpoint=('https://download.openmmlab.com/mmclassification/v0/deit3/'
                        'deit3-large-p16_in21k-pre_3rdparty_in1k_20221009-d8d27084.pth'),
    input_shape=(3, 224, 224),
    methods=[dict(type='ViTKDLoss', alpha=3e-5, beta=3e-6, mask_ratio=0.5, reduction='sum')],
)
# The EMA hook of the student's mmpretrain config (DeiT-B), and the teacher check: DeiT3-L IN-21K
# 86.97 (mmpretrain's metafile, deit3-large-p16_in21k-pre_3rdparty_in1k; DeiT3's full 224 px crop,
# see the DeiT3-S config).
custom_hooks = [
    dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL'),
    dict(type='mmkd_ext.TeacherCheckHook', expected_top1=86.97),
]
