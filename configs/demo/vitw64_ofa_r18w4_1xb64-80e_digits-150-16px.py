# OFA on the demo's heterogeneous pair (OFA's purpose): the ViT-w64 teacher (16 px, all digits) ->
# the ResNet-18-w4 student on 150 labelled digits at 16 px; exit branches on layer1-4, eps 1, T 1
# (OFA's CIFAR-100 settings), the student's cross-entropy at weight 1.
# Train the teacher first: python tools/train.py configs/demo/vit-w64-d4-p4_1xb64-40e_digits-16px.py
_base_ = ['./resnet18-w4_1xb64-80e_digits-150-16px.py']  # the student's recipe

model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student='{{ fileDirname }}/resnet18-w4_1xb64-80e_digits-150-16px.py',
    teacher='{{ fileDirname }}/vit-w64-d4-p4_1xb64-40e_digits-16px.py',
    teacher_checkpoint='work_dirs/vit-w64-d4-p4_1xb64-40e_digits-16px/epoch_40.pth',
    input_shape=(1, 16, 16),
    methods=[
        dict(
            type='OFALoss',
            eps=1.0,
            temperature=1.0,
            student_taps=dict(
                stages=['backbone.layer1', 'backbone.layer2', 'backbone.layer3', 'backbone.layer4'
                        ]))
    ],
)
