# ViTKD, DeiT3-B (IN-21K) -> DeiT-S. Published: 80.55 -> 81.95.
_base_ = ['mmpretrain::deit/deit-small_4xb256_in1k.py']
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student='mmpretrain::deit/deit-small_4xb256_in1k.py',
    # mmpretrain's DeiT3-B config with mmkd_ext's DeiT3 backbone (see README.md, "DeiT3 teachers").
    teacher='{{ fileDirname }}/models/deit3-base-p16_in1k.py',
    teacher_checkpoint=('https://download.openmmlab.com/mmclassification/v0/deit3/'
                        'deit3-base-p16_in21k-pre_3rdparty_in1k_20221009-87983ca1.pth'),
    input_shape=(3, 224, 224),
    methods=[dict(type='ViTKDLoss', alpha=3e-5, beta=3e-6, mask_ratio=0.5, reduction='sum')],
)
# Teacher check: DeiT3-B IN-21K 85.70 (mmpretrain's metafile,
# deit3-base-p16_in21k-pre_3rdparty_in1k; DeiT3's full 224 px crop, see the DeiT3-S config).
custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook', expected_top1=85.70)]
