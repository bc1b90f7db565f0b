# Distillation inside detection: Mask R-CNN Swin-T (mmdet's 1x model, 42.7 box / 39.3 mask AP)
# teaches Mask R-CNN R50-FPN (mmdet's 2x recipe, 39.2 / 35.4 alone) with MGD on the four FPN
# levels, as MGD's own Mask R-CNN configs do: one masked generative block per level, spatial masks,
# alpha_mgd 5e-7, lambda_mgd 0.45, gradient clipping at 35. Teacher and student are mmdet's own
# configs. The teacher runs only up to its FPN (its RPN and RoI heads and its losses never run);
# validation and test evaluate the student with mmdet's COCO metric (bbox and segm).
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_2x_coco.py']  # the student's data, schedule, runtime
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)


def _mgd(level):
    tap = f'neck.fpn_convs.{level}'  # FPN output P{level + 2} (256 channels on both sides)
    return dict(
        type='MGDLoss',
        alpha_mgd=5e-7,
        lambda_mgd=0.45,
        mask='spatial',
        student_taps=dict(feat=tap),
        teacher_taps=dict(feat=tap),
        name=f'mgd_fpn{level}')


model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student='mmdet::mask_rcnn/mask-rcnn_r50_fpn_2x_coco.py',
    teacher='mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
    teacher_checkpoint=(
        'https://download.openmmlab.com/mmdetection/v2.0/swin/mask_rcnn_swin-t-p4-w7_fpn_1x_coco/'
        'mask_rcnn_swin-t-p4-w7_fpn_1x_coco_20210902_120937-9d6b7cfa.pth'),
    methods=[_mgd(level) for level in range(4)])

optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
