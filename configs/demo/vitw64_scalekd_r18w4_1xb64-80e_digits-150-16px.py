# ScaleKD from the ViT-w64 teacher (all 1,347 digits, 16 px, 4x4 patch grid) into the ResNet-18-w4
# student that sees 150 labelled digits at 16 px (a CNN student, a ViT teacher: the cross-
# architecture pair ScaleKD is for). The reference's composition and weights, untuned:
# 0.5 CE + 0.5 KD (T 1) + dual-view mimicking (0.08 direct, 0.06 alternative) of the teacher's
# final feature (ln1, 64 @ 4x4) by the proxy path (student layer3, 16 @ 4x4 -> stage-3 CAPs ->
# the teacher's last block + ln1, run with autograd through its frozen weights) and by the
# last-stage CAPs (student layer4, 32 @ 2x2, queried by the proxy outputs).
# The sums run over 16 positions here instead of ImageNet's 49 (Swin-L's 7x7).
# Train the teacher first:
#   python tools/train.py configs/demo/vit-w64-d4-p4_1xb64-40e_digits-16px.py
_base_ = ['./resnet18-w4_1xb64-80e_digits-150-16px.py']  # the student's recipe

model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student='{{ fileDirname }}/resnet18-w4_1xb64-80e_digits-150-16px.py',
    teacher='{{ fileDirname }}/vit-w64-d4-p4_1xb64-40e_digits-16px.py',
    teacher_checkpoint='work_dirs/vit-w64-d4-p4_1xb64-40e_digits-16px/epoch_40.pth',
    student_loss_weight=0.5,
    input_shape=(1, 16, 16),
    methods=[
        dict(
            type='ScaleKDLoss',
            student_taps=dict(stage3='backbone.layer3', stage4='backbone.layer4', logits='head'),
            # a ViT teacher: the proxy path runs its last block (tail_blocks=1) and final norm on
            # the projected tokens, starting after layers.2 (its class token is reused)
            teacher_taps=dict(
                final='backbone.ln1',
                stage3='backbone.layers.2',
                grid='backbone.patch_embed',
                logits='head'),
            tail_blocks=1,
            softmax_scale=(5.0, 5.0),
            dir_weight=0.08,
            alt_weight=0.06,
            kd_weight=0.5,
            tau=1.0)
    ],
)
