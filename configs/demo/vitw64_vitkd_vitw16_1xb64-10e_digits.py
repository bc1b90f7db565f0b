# ViTKD from the ViT-w64 teacher into the ViT-w16 student on the digits.
# Train the teacher first: python tools/train.py configs/demo/vit-w64-d4_1xb64-10e_digits.py
# Weights: the paper's alpha 3e-5 / beta 3e-6 ('sum' reduction) are a per-element weight; with 4
# patch tokens and D_t = 64 instead of 196 x 384 they would be about 300 times weaker here, so the
# demo uses reduction='mean' with the paper's DeiT3-S -> DeiT-T weights converted to a mean:
# alpha_mean = 3e-5 * 2 layers * 196 * 384 = 4.5, beta_mean = 3e-6 * 196 * 384 = 0.23
# (docs/methods/vitkd.md).
_base_ = ['./vit-w16-d4_1xb64-10e_digits.py']  # the student's recipe: data, schedule, runtime

model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student='{{ fileDirname }}/vit-w16-d4_1xb64-10e_digits.py',
    teacher='{{ fileDirname }}/vit-w64-d4_1xb64-10e_digits.py',
    teacher_checkpoint='work_dirs/vit-w64-d4_1xb64-10e_digits/epoch_10.pth',
    input_shape=(1, 8, 8),
    methods=[dict(type='ViTKDLoss', alpha=4.5, beta=0.23, mask_ratio=0.5, reduction='mean')],
)
