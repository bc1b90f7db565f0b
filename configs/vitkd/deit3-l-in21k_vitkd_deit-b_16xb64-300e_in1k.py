# ViTKD, DeiT3-L (IN-21K) -> DeiT-B. Published: 81.76 -> 83.46.
# DeiT-B's mmpretrain recipe is 16 GPUs x 64 = the same total batch 1024 and lr 1e-3.
# The teacher has 24 blocks: ViTKD still takes its first two and its last (after the final norm).
_base_ = ['mmpretrain::deit/deit-base_16xb64_in1k.py']
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student='mmpretrain::deit/deit-base_16xb64_in1k.py',
    teacher='mmpretrain::deit3/deit3-large-p16_64xb64_in1k.py',
    teacher_checkpoint=('https://download.openmmlab.com/mmclassification/v0/deit3/'
                        'deit3-large-p16_in21k-pre_3rdparty_in1k_20221009-d8d27084.pth'),
    input_shape=(3, 224, 224),
    methods=[dict(type='ViTKDLoss', alpha=3e-5, beta=3e-6, mask_ratio=0.5, reduction='sum')],
)
