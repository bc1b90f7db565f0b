# ScaleKD (Fan et al., NeurIPS 2024), "traditional" recipe: Swin-L (IN-21K pre-trained, IN-1K
# fine-tuned at 224 px, 86.24) -> ResNet-50, 100 epochs. The student's recipe is mmpretrain's
# resnet50_8xb32_in1k (SGD lr 0.1, momentum 0.9, weight decay 1e-4, batch 8 x 32 = 256, steps at
# epochs 30/60/90), as the reference's traditional configs. Loss: 0.5 CE + 0.5 KD (T 1) + the four
# feature terms (stage-3 CAPs -> the frozen teacher's last stage -> both views; last-stage CAPs
# queried by the proxy outputs -> both views), weights 0.08 / 0.06, softmax scale 5.
# The base of the other configs in this folder.
_base_ = ['mmpretrain::resnet/resnet50_8xb32_in1k.py']  # the student's data, schedule, runtime
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student='mmpretrain::resnet/resnet50_8xb32_in1k.py',
    teacher='mmpretrain::swin_transformer/swin-large_16xb64_in1k.py',
    teacher_checkpoint=('https://download.openmmlab.com/mmclassification/v0/swin-transformer/'
                        'convert/swin_large_patch4_window7_224_22kto1k-5f0996db.pth'),
    student_loss_weight=0.5,
    input_shape=(3, 224, 224),
    methods=[
        dict(
            type='ScaleKDLoss',
            # C4 and C5 of a ResNet (1024 @ 14x14, 2048 @ 7x7 at 224 px) and its logits
            student_taps=dict(stage3='backbone.layer3', stage4='backbone.layer4', logits='head'),
            # Swin: the proxy path starts from stages.2 (768 @ 14x14 for Swin-L) and ends at the
            # final norm norm3 (1536 @ 7x7), the only feature target
            teacher_taps=dict(final='backbone.norm3', stage3='backbone.stages.2', logits='head'),
            softmax_scale=(5.0, 5.0),
            dir_weight=0.08,
            alt_weight=0.06,
            kd_weight=0.5,
            tau=1.0)
    ],
)
# Teacher check: Swin-L IN-21K 86.24 (mmpretrain's metafile, swin-large_in21k-pre-3rdparty_in1k).
custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook', expected_top1=86.24)]
