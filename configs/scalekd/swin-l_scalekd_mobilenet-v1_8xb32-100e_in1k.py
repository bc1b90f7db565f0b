# ScaleKD, "traditional" recipe: Swin-L (86.24) -> MobileNet-V1 1.0, 100 epochs, SGD lr 0.1, batch
# 8 x 32 = 256, cosine (the student's recipe: models/mobilenet-v1_8xb32-100e_in1k.py). Taps: C4
# (layer3, 512 @ 14x14) and C5 (layer4, 1024 @ 7x7) of mmkd_ext.MobileNetV1, named like a ResNet's.
_base_ = ['./models/mobilenet-v1_8xb32-100e_in1k.py']  # the student's data, schedule, runtime
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student='{{ fileDirname }}/models/mobilenet-v1_8xb32-100e_in1k.py',
    teacher='mmpretrain::swin_transformer/swin-large_16xb64_in1k.py',
    teacher_checkpoint=('https://download.openmmlab.com/mmclassification/v0/swin-transformer/'
                        'convert/swin_large_patch4_window7_224_22kto1k-5f0996db.pth'),
    student_loss_weight=0.5,
    input_shape=(3, 224, 224),
    methods=[
        dict(
            type='ScaleKDLoss',
            student_taps=dict(stage3='backbone.layer3', stage4='backbone.layer4', logits='head'),
            teacher_taps=dict(final='backbone.norm3', stage3='backbone.stages.2', logits='head'),
            softmax_scale=(5.0, 5.0),
            dir_weight=0.08,
            alt_weight=0.06,
            kd_weight=0.5,
            tau=1.0)
    ],
)
custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook', expected_top1=86.24)]
