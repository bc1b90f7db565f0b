# ViTKD, DeiT-S teacher -> DeiT-T student, ImageNet-1K. Published: 74.42 -> 75.40.
# The student's own mmpretrain config is the base: its data pipeline (RandAugment, random erasing),
# DeiT schedule (300 epochs, AdamW lr 1e-3 at total batch 1024 = 4 GPUs x 256, 20 warm-up epochs,
# cosine, wd 0.05, grad clip 5) and Mixup 0.8 / CutMix 1.0 (model.train_cfg.augments, kept by the
# Distiller which uses the student's data preprocessor).
_base_ = ['mmpretrain::deit/deit-tiny_4xb256_in1k.py']
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student='mmpretrain::deit/deit-tiny_4xb256_in1k.py',
    teacher='mmpretrain::deit/deit-small_4xb256_in1k.py',
    teacher_checkpoint=('https://download.openmmlab.com/mmclassification/v0/deit/'
                        'deit-small_pt-4xb256_in1k_20220218-9425b9bb.pth'),
    input_shape=(3, 224, 224),
    # The paper's settings: taps blocks 0, 1 (mimic) and the final LayerNorm (generation).
    methods=[dict(type='ViTKDLoss', alpha=3e-5, beta=3e-6, mask_ratio=0.5, reduction='sum')],
)
# Evaluate the teacher on the val set before training; stop if it is > 1 point below its published
# top-1: DeiT-S 80.69 (mmpretrain's metafile, deit-small_4xb256_in1k).
custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook', expected_top1=80.69)]
