# ScaleKD, "traditional" recipe: Swin-S (IN-1K, the official Microsoft weights converted by
# OpenMMLab, 83.21) -> ResNet-50. The reference's Swin-S config differs from its Swin-L/B ones in
# two settings, kept here: 3 and 6 CAP heads (head width 128), and no alternative view on the
# last-stage CAPs (alt weight 0 there; the proxy path still has both views).
_base_ = ['./swin-l_scalekd_resnet50_8xb32-100e_in1k.py']
model = dict(
    teacher='mmpretrain::swin_transformer/swin-small_16xb64_in1k.py',
    teacher_checkpoint=('https://download.openmmlab.com/mmclassification/v0/swin-transformer/'
                        'convert/swin_small_patch4_window7_224-cc7a01c9.pth'),
    methods=[
        dict(
            type='ScaleKDLoss',
            student_taps=dict(stage3='backbone.layer3', stage4='backbone.layer4', logits='head'),
            teacher_taps=dict(final='backbone.norm3', stage3='backbone.stages.2', logits='head'),
            softmax_scale=(5.0, 5.0),
            num_heads=(3, 6),
            dir_weight=0.08,
            alt_weight=(0.06, 0.0),
            kd_weight=0.5,
            tau=1.0)
    ])
# Teacher check: Swin-S 83.21 (mmpretrain's metafile, swin-small_3rdparty_in1k).
custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook', expected_top1=83.21)]
