# ScaleKD, "traditional" recipe: Swin-B (IN-21K pre-trained, IN-1K fine-tuned, 85.16) -> ResNet-50.
# As the Swin-L config; the teacher's widths halve (stage 3: 512, final 1024 @ 7x7), and the CAP
# heads follow them (8 and 16, the reference's). The reference's Swin-B config gives softmax_scale
# as a float where its code indexes a list and crashes as shipped; the value meant is 5 for both.
_base_ = ['./swin-l_scalekd_resnet50_8xb32-100e_in1k.py']
model = dict(
    teacher='mmpretrain::swin_transformer/swin-base_16xb64_in1k.py',
    teacher_checkpoint=('https://download.openmmlab.com/mmclassification/v0/swin-transformer/'
                        'convert/swin_base_patch4_window7_224_22kto1k-f967f799.pth'))
# Teacher check: Swin-B IN-21K 85.16 (mmpretrain's metafile, swin-base_in21k-pre-3rdparty_in1k).
custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook', expected_top1=85.16)]
