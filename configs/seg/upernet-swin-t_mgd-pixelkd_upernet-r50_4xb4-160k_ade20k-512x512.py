# Distillation inside segmentation training: UPerNet Swin-T (mmseg's ADE20K model, 44.41 mIoU)
# teaches UPerNet R50 (mmseg's recipe: 4 GPUs x 4 images, 160k iterations, 512x512 crops; 42.05
# mIoU alone in mmseg's model zoo) with MGD on the backbones' last stage and per-pixel KD on the
# decode heads' class scores. No paper reports this pair: it has no published distilled number.
_base_ = ['mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py']  # student's data, schedule
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student='mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py',
    teacher='mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
    teacher_checkpoint=(
        'https://download.openmmlab.com/mmsegmentation/v0.5/swin/upernet_swin_tiny_patch4_window7_'
        '512x512_160k_ade20k_pretrain_224x224_1K/upernet_swin_tiny_patch4_window7_512x512_160k_'
        'ade20k_pretrain_224x224_1K_20210531_112542-e380ad3e.pth'),
    input_shape=(3, 512, 512),  # the training crops
    methods=[
        # MGD's segmentation setting (alpha 2e-5, lambda 0.75, spatial mask) on the 1/32 maps:
        # ResNet's layer4 (2048 channels, projected to 768) against Swin's last stage (tokens
        # with their grid, laid on a map).
        dict(
            type='MGDLoss',
            alpha_mgd=2e-5,
            lambda_mgd=0.75,
            mask='spatial',
            student_taps=dict(feat='backbone.layer4'),
            teacher_taps=dict(feat='backbone.stages.3')),
        # KL per pixel between the 150-class scores of the decode heads, at their resolution (1/4
        # of the input: 128x128 for 512x512 crops), averaged over pixels.
        dict(
            type='KDLoss',
            tau=1.0,
            loss_weight=1.0,
            name='pixel_kd',
            student_taps=dict(logits='decode_head.conv_seg'),
            teacher_taps=dict(logits='decode_head.conv_seg')),
    ])
# Evaluate the teacher on the validation set before training (mmseg lists it at 44.41 mIoU).
custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook', expected_top1=44.41, metric='mIoU')]
