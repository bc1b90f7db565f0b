# KD (Hinton) from the ResNet-18-w32 teacher (all 1,347 digits) into the ResNet-18-w4 student that
# sees 150 labelled digits.
# Train the teacher first: python tools/train.py configs/demo/resnet18-w32_1xb64-10e_digits.py
_base_ = ['./resnet18-w4_1xb64-80e_digits-150.py']  # the student's recipe: data, schedule, runtime

model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student='{{ fileDirname }}/resnet18-w4_1xb64-80e_digits-150.py',
    teacher='{{ fileDirname }}/resnet18-w32_1xb64-10e_digits.py',
    teacher_checkpoint='work_dirs/resnet18-w32_1xb64-10e_digits/epoch_10.pth',
    input_shape=(1, 8, 8),
    methods=[dict(type='KDLoss', tau=4.0, loss_weight=1.0)],
)
