"""Detection: Mask R-CNN from mmdet's own configs, our downstream configs taking exported students,
fine-tuning from a distillation work_dir in one command, and distillation inside mmdet training,
all run on a tiny COCO-format set through tools/train.py and evaluated with the COCO metric."""
import copy
import glob
import json
import os
import os.path as osp
import runpy
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT
from detection_helpers import shrink_detector, tiny_detection_data, write_tiny_coco
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmkd_ext  # noqa: F401
from mmkd_ext.apis.finetune import find_checkpoint, train_command
from mmkd_ext.utils.config import load_model_config

DOWNSTREAM = osp.join(ROOT, 'configs', 'downstream')
R50_CFG = osp.join(DOWNSTREAM, 'mask-rcnn_resnet50-distilled_fpn_8xb2-12e_coco.py')
DET_KD_CFG = osp.join(ROOT, 'configs', 'det', 'mask-rcnn-swin-t_mgd_mask-rcnn-r50_8xb2-24e_coco.py')


def run(cmd, timeout=600):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1')
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f'{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
    return proc.stdout + proc.stderr


def scalars(work_dir):
    """The records of the run's vis_data/scalars.json (the newest run in ``work_dir``)."""
    logs = sorted(glob.glob(osp.join(str(work_dir), '*', 'vis_data', 'scalars.json')))
    assert logs, f'no scalars.json under {work_dir}'
    with open(logs[-1]) as f:
        return [json.loads(line) for line in f if line.strip()]


def coco_metrics(records):
    evals = [r for r in records if 'coco/bbox_mAP' in r]
    assert evals, f'no COCO evaluation in the log: {records[-3:]}'
    last = evals[-1]
    assert 'coco/segm_mAP' in last, last
    return last


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    return write_tiny_coco(str(tmp_path_factory.mktemp('coco')), num_images=4)


def _scored(detector):
    """Keep every detection, up to 20 per image: a detector trained for a few steps scores every
    class near 1/81, below mmdet's 0.05 threshold, and the COCO metric has nothing to evaluate."""
    detector.test_cfg.rcnn.update(score_thr=0.0, max_per_img=20)
    return detector


def _quiet(cfg, work_dir, max_epochs):
    cfg.work_dir = str(work_dir)
    cfg.log_level = 'WARNING'
    cfg.experiment_name = f'test_{time.time_ns()}'
    cfg.randomness = dict(seed=0)
    cfg.train_cfg.max_epochs = max_epochs
    cfg.train_cfg.val_interval = max_epochs
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.default_hooks.pop('visualization', None)
    return cfg


# ------------------------------------------------------------------------ the tiny data itself
def test_tiny_coco_scores_one_when_predictions_are_the_ground_truth(coco, tmp_path):
    """The json and masks are valid COCO: mmdet's CocoMetric (pycocotools) gives bbox and segm
    mAP 1.0 to the ground truth itself, and less when one box is moved."""
    from mmdet.evaluation import CocoMetric
    from pycocotools import mask as mask_utils
    ann = coco['annotations']
    names = [c['name'] for c in ann['categories']]

    def evaluate(shift):
        metric = CocoMetric(ann_file=coco['json'], metric=['bbox', 'segm'])
        metric.dataset_meta = dict(classes=names)
        for img in ann['images']:
            objs = [a for a in ann['annotations'] if a['image_id'] == img['id']]
            boxes = np.array([[
                a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2], a['bbox'][1] + a['bbox'][3]
            ] for a in objs])
            if img['id'] == 1:
                boxes[0] += shift
            rles = [
                mask_utils.merge(
                    mask_utils.frPyObjects(a['segmentation'], img['height'], img['width']))
                for a in objs
            ]
            masks = np.stack([mask_utils.decode(r) for r in rles]).astype(bool)
            pred = dict(
                bboxes=torch.tensor(boxes, dtype=torch.float32),
                scores=torch.ones(len(objs)),
                labels=torch.tensor([a['category_id'] - 1 for a in objs]),
                masks=torch.from_numpy(masks))
            metric.process({}, [
                dict(
                    img_id=img['id'], ori_shape=(img['height'], img['width']), pred_instances=pred)
            ])
        return metric.evaluate(len(ann['images']))

    exact = evaluate(0)
    assert exact['coco/bbox_mAP'] == pytest.approx(1.0)
    assert exact['coco/segm_mAP'] == pytest.approx(1.0)
    moved = evaluate(30)
    assert moved['coco/bbox_mAP'] < 1.0 and moved['coco/segm_mAP'] == pytest.approx(1.0)


# ------------------------------------------------------------------------ mmdet's own config
def test_mask_rcnn_from_mmdets_own_config_trains_and_predicts():
    """mmdet's Mask R-CNN R50-FPN 1x, built as its package config says (full width), takes a loss
    step and predicts boxes and masks on a 128 px image."""
    from mmdet.testing import demo_mm_inputs
    from mmengine.optim import OptimWrapper

    from mmkd_ext.distillers.builder import build_model
    init_default_scope('mmdet')
    cfg = load_model_config('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    cfg.backbone.init_cfg = None  # no download of ImageNet weights
    cfg.test_cfg.rcnn.max_per_img = 10  # masks for 10 detections, not 100 (CPU time)
    model = build_model(cfg)
    assert type(model).__name__ == 'MaskRCNN' and model.backbone.layer4[0].conv1.in_channels == 1024
    data = demo_mm_inputs(1, [[3, 128, 128]], num_items=[2], with_mask=True, num_classes=80)
    model.train()
    log = model.train_step(data, OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-4)))
    assert {'loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'} <= set(log)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in log.values())
    model.eval()
    pred = model.val_step(data)[0].pred_instances
    assert pred.bboxes.shape[1] == 4 and pred.masks.shape[-2:] == (128, 128)


# ------------------------------------------------------------------------ exported students
STUDENTS = {
    'mask-rcnn_resnet50-distilled_fpn_8xb2-12e_coco.py':
    ('mmpretrain::resnet/resnet50_8xb32_in1k.py', 'backbone.layer1.0.conv1.weight', set()),
    'mask-rcnn_resnet50-d-distilled_fpn_8xb2-12e_coco.py':
    (osp.join(ROOT, 'configs/scalekd/models/resnet50-d-bce_32xb64-lamb-300e_in1k.py'),
     'backbone.stem.0.conv.weight', set()),
    'mask-rcnn_swin-t-distilled_fpn_8xb2-12e_coco.py':
    ('mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py',
     'backbone.stages.2.blocks.3.attn.w_msa.qkv.weight', {'norm0', 'norm1', 'norm2'}),
    # (The ViT-B/16 config differs from this one only in arch and width: not repeated, 20 s.)
    'mask-rcnn_deit-s-distilled_simple-fpn-lsj_8xb8-100e_coco.py':
    ('mmpretrain::deit/deit-small_4xb256_in1k.py', 'backbone.layers.11.attn.qkv.weight', set()),
}


@pytest.mark.parametrize('name', sorted(STUDENTS))
def test_downstream_config_loads_the_mmpretrain_student(name, tmp_path):
    """Each downstream config, at full size, fills its whole backbone from the weights of the
    mmpretrain student it is for (saved as tools/export_student.py writes them)."""
    from mmkd_ext.distillers.builder import build_model
    student_cfg, probe, fresh = STUDENTS[name]
    init_default_scope('mmpretrain')
    student = build_model(load_model_config(student_cfg))
    exported = {k: v for k, v in student.state_dict().items()}
    path = str(tmp_path / 'student.pth')
    torch.save(dict(state_dict=exported, meta=dict(exported_from='mmkd_ext.Distiller')), path)

    cfg = Config.fromfile(osp.join(DOWNSTREAM, name))
    cfg.model.backbone.init_cfg.checkpoint = path
    init_default_scope('mmdet')
    detector = build_model(cfg.model)
    # Only the backbone is initialised here (the heads' own init is mmdet's business).
    detector.backbone.init_weights()
    own = {f'backbone.{k}': v for k, v in detector.backbone.state_dict().items()}
    assert torch.equal(own[probe], exported[probe])
    missing = {k for k in own if k not in exported}
    assert {k.split('.')[1] for k in missing} <= fresh, sorted(missing)[:10]
    for key in own.keys() & exported.keys():
        if key.endswith('pos_embed'):  # resized from 14 x 14 to the 64 x 64 grid
            assert own[key].shape[1] == 1 + 64 * 64 and exported[key].shape[1] == 1 + 14 * 14
        else:
            assert torch.equal(own[key], exported[key]), key


# ------------------------------------------------------------------------ the whole path
def _tiny_r50_distillation_run(coco, work_dir):
    """A real (tiny) distillation run whose student is an mmpretrain ResNet-50 at width 8 on the
    tiny set's images as a 2-class folder dataset; returns the Runner's work_dir."""
    import cv2
    from mmengine.runner import Runner
    folder = osp.join(str(work_dir), 'cls_data')
    for i, img in enumerate(coco['annotations']['images']):
        os.makedirs(osp.join(folder, f'class_{i % 2}'), exist_ok=True)
        image = cv2.imread(osp.join(coco['data_root'], coco['img_prefix'], img['file_name']))
        cv2.imwrite(osp.join(folder, f'class_{i % 2}', img['file_name']), image)
    classifier = dict(
        type='ImageClassifier',
        _scope_='mmpretrain',
        data_preprocessor=dict(
            mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True),
        backbone=dict(type='ResNet', depth=50, stem_channels=8, base_channels=8),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=2,
            in_channels=256,
            loss=dict(type='CrossEntropyLoss')))
    cfg = Config(
        dict(
            default_scope='mmpretrain',
            custom_imports=dict(imports=['mmkd_ext'], allow_failed_imports=False),
            model=dict(
                type='mmkd_ext.Distiller',
                student=classifier,
                teacher=copy.deepcopy(classifier),
                input_shape=(3, 32, 32),
                methods=[dict(type='KDLoss', tau=1.0)]),
            train_dataloader=dict(
                batch_size=2,
                num_workers=0,
                sampler=dict(type='DefaultSampler', shuffle=True),
                dataset=dict(
                    type='CustomDataset',
                    data_root=folder,
                    with_label=True,
                    pipeline=[
                        dict(type='LoadImageFromFile'),
                        dict(type='Resize', scale=32),
                        dict(type='PackInputs')
                    ])),
            train_cfg=dict(by_epoch=True, max_epochs=1),
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
            default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
            work_dir=str(work_dir),
            log_level='WARNING',
            experiment_name=f'test_{time.time_ns()}'))
    Runner.from_cfg(cfg).train()
    return str(work_dir)


def test_finetune_student_from_a_distillation_work_dir(coco, tmp_path, monkeypatch):
    """tools/finetune_student.py: distillation work_dir -> exported student -> Mask R-CNN
    fine-tuning (the R50 downstream config, narrowed) through tools/train.py -> COCO bbox and
    segm evaluation; the detector's backbone starts from exactly the exported weights."""
    with monkeypatch.context() as patch:
        patch.setattr(Config, 'pretty_text', property(lambda self: '# not formatted\n'))
        distill_dir = _tiny_r50_distillation_run(coco, tmp_path / 'distill')
    assert find_checkpoint(distill_dir) == osp.join(distill_dir, 'epoch_1.pth')

    cfg = Config.fromfile(R50_CFG)
    init_cfg = copy.deepcopy(cfg.model.backbone.init_cfg)
    factor = tiny_detection_data(cfg, coco)
    cfg.model = _scored(shrink_detector(cfg.model, factor))
    cfg.model.backbone.init_cfg = init_cfg  # the config's own: student.pth, prefix backbone.
    cfg = _quiet(cfg, tmp_path / 'unused', max_epochs=2)
    cfg_path = str(tmp_path / 'mask-rcnn_tiny.py')
    cfg.dump(cfg_path)

    ft_dir = tmp_path / 'finetune'
    out = run([
        sys.executable, 'tools/finetune_student.py', distill_dir, cfg_path, '--work-dir',
        str(ft_dir)
    ])
    student = osp.join(distill_dir, 'student_epoch_1.pth')
    assert f'to {student}' in out, out[-2000:]
    exported = torch.load(student, weights_only=True)['state_dict']
    tuned = torch.load(str(ft_dir / 'epoch_2.pth'), weights_only=False)['state_dict']
    # frozen_stages=1 (mmdet's recipe): the stem and the first stage stay as loaded.
    for key in ('backbone.conv1.weight', 'backbone.layer1.0.conv2.weight'):
        assert torch.equal(tuned[key], exported[key]), key
    # Trained stages start from the student too: they moved from it, but only a little.
    key = 'backbone.layer4.0.conv2.weight'
    assert not torch.equal(tuned[key], exported[key])
    assert (tuned[key] - exported[key]).abs().max() < 0.1 * exported[key].abs().max()
    metrics = coco_metrics(scalars(ft_dir))
    assert all(np.isfinite(metrics[f'coco/{k}_mAP']) for k in ('bbox', 'segm'))


def test_finetune_command_and_errors(tmp_path, monkeypatch):
    cmd = train_command('c.py', '/s.pth', gpus=4, cfg_options=['a=1'], train_args=['--amp'])
    assert cmd[0] == 'bash' and cmd[1].endswith('dist_train.sh') and cmd[2:4] == ['c.py', '4']
    assert cmd[4:] == ['--cfg-options', 'model.backbone.init_cfg.checkpoint=/s.pth', 'a=1', '--amp']
    with pytest.raises(FileNotFoundError, match='No checkpoint in'):
        find_checkpoint(str(tmp_path))
    for n in (2, 10):
        torch.save({}, str(tmp_path / f'epoch_{n}.pth'))
    assert find_checkpoint(str(tmp_path)).endswith('epoch_10.pth')  # 10 > 2, not by name
    torch.save({}, str(tmp_path / 'best_coco_bbox_mAP_epoch_2.pth'))
    assert find_checkpoint(str(tmp_path)).endswith('best_coco_bbox_mAP_epoch_2.pth')
    # The tool stops, saying why, before training: a checkpoint that is not a distiller's.
    os.makedirs(tmp_path / 'plain')
    torch.save(
        dict(state_dict={'backbone.conv1.weight': torch.zeros(1)}),
        str(tmp_path / 'plain' / 'epoch_1.pth'))
    monkeypatch.setattr(sys, 'argv', ['finetune_student.py', str(tmp_path / 'plain'), R50_CFG])
    with pytest.raises(SystemExit, match='holds no "student." weights'):
        runpy.run_path(osp.join(ROOT, 'tools', 'finetune_student.py'), run_name='__main__')
    from mmkd_ext.apis.finetune import check_checkpoint_key
    with pytest.raises(KeyError, match='--checkpoint-key'):
        check_checkpoint_key(
            osp.join(ROOT, 'configs/demo/resnet18-w4_1xb64-80e_digits-150.py'),
            'model.backbone.init_cfg.checkpoint')


# ------------------------------------------------------------------------ distillation inside
def test_teacher_detector_runs_only_up_to_its_fpn():
    """Mask R-CNN teacher, MGD on the FPN levels: the teacher's RPN and RoI heads never run."""
    from mmdet.testing import demo_mm_inputs
    from mmengine.optim import OptimWrapper

    from mmkd_ext.distillers import Distiller
    init_default_scope('mmdet')
    cfg = Config.fromfile(DET_KD_CFG).model
    d = Distiller(
        student=shrink_detector(load_model_config(cfg.student)),
        teacher=shrink_detector(load_model_config(cfg.teacher)),
        methods=cfg.methods,
        input_shape=(3, 64, 64))
    assert [m.name for m in d.methods] == [f'mgd_fpn{i}' for i in range(4)]
    ran = []
    hooks = [
        m.register_forward_hook(lambda *a: ran.append(1))
        for m in (d.teacher.rpn_head, d.teacher.roi_head)
    ]
    data = demo_mm_inputs(2, [[3, 64, 64], [3, 64, 96]], num_items=[2, 1], with_mask=True)
    log = d.train_step(data, OptimWrapper(torch.optim.SGD(d.parameters(), lr=1e-3)))
    for h in hooks:
        h.remove()
    assert ran == []
    assert {'loss_rpn_cls', 'loss_mask', 'loss_mgd_fpn0', 'loss_mgd_fpn3'} <= set(log)


def test_distillation_inside_mask_rcnn_trains_evaluates_and_resumes(coco, tmp_path, monkeypatch):
    """configs/det (Swin-T Mask R-CNN -> R50 Mask R-CNN, MGD on the FPN), narrowed, on the tiny set
    through tools/train.py: COCO bbox/segm evaluation of the student; checkpoints hold no teacher;
    `--resume` continues from one (the teacher rebuilt from its config and checkpoint)."""
    from mmkd_ext.distillers.builder import build_model
    cfg = Config.fromfile(DET_KD_CFG)
    factor = tiny_detection_data(cfg, coco)
    m = cfg.model
    m.student = _scored(shrink_detector(load_model_config(m.student), factor))
    m.teacher = shrink_detector(load_model_config(m.teacher), factor)
    m.input_shape = (3, 64, 64)
    init_default_scope('mmdet')
    teacher = build_model(m.teacher)
    teacher.init_weights()
    m.teacher_checkpoint = str(tmp_path / 'teacher.pth')
    torch.save(dict(state_dict=teacher.state_dict()), m.teacher_checkpoint)
    work = tmp_path / 'kd'
    cfg = _quiet(cfg, work, max_epochs=1)
    cfg_path = str(tmp_path / 'kd_tiny.py')
    cfg.dump(cfg_path)

    run([sys.executable, 'tools/train.py', cfg_path])
    first = coco_metrics(scalars(work))
    assert all(np.isfinite(first[f'coco/{k}_mAP']) for k in ('bbox', 'segm'))
    ckpt = torch.load(str(work / 'epoch_1.pth'), weights_only=False)
    keys = ckpt['state_dict'].keys()
    assert not any(k.startswith('teacher.') for k in keys)
    assert any(k.startswith('student.backbone.') for k in keys)
    assert any(k.startswith('methods.3.generation.') for k in keys)

    # In a fresh process: an in-process Runner may reuse a visualizer of an earlier test.
    before = set(glob.glob(osp.join(str(work), '*', 'vis_data', 'scalars.json')))
    run([
        sys.executable, 'tools/train.py', cfg_path, '--resume', '--cfg-options',
        'train_cfg.max_epochs=2', 'train_cfg.val_interval=2'
    ])
    resumed = torch.load(str(work / 'epoch_2.pth'), weights_only=False)
    assert resumed['meta']['epoch'] == 2 and resumed['meta']['iter'] == 2 * ckpt['meta']['iter']
    # the resumed run's own log (the file it created): it started after the first epoch
    logs = set(glob.glob(osp.join(str(work), '*', 'vis_data', 'scalars.json'))) - before
    assert len(logs) == 1, (before, logs)
    with open(logs.pop()) as f:
        records = [json.loads(line) for line in f if line.strip()]
    steps = [r['step'] for r in records if 'loss_mgd_fpn0' in r]
    assert steps and min(steps) == ckpt['meta']['iter'] + 1, steps
    assert 'coco/segm_mAP' in records[-1]
