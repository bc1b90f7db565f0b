"""Segmentation end to end on a tiny ADE20K-format set the test draws: UPerNet fine-tuned from an
exported distilled student, and distillation inside mmseg training (UPerNet Swin-T -> UPerNet R50
with MGD + per-pixel KD), both through tools/train.py and MMEngine's Runner on the CPU, each ending
with mmseg's IoUMetric; the logged mIoU is checked against our own computation from the saved
weights and the label files."""
import glob
import json
import os
import os.path as osp
import pprint
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmkd_ext  # noqa: F401
from mmkd_ext.apis.export import export_student
from mmkd_ext.distillers import Distiller
from mmkd_ext.utils.config import load_model_config

FINETUNE_CFG = osp.join(ROOT, 'configs', 'downstream',
                        'upernet_resnet50-distilled_4xb4-160k_ade20k-512x512.py')
SEG_KD_CFG = osp.join(ROOT, 'configs', 'seg',
                      'upernet-swin-t_mgd-pixelkd_upernet-r50_4xb4-160k_ade20k-512x512.py')
IMG = 64  # side of the drawn images and of the training crops
# ADE20K label values (1..150; 0 is 'other', ignored with reduce_zero_label).
WALL, FLOOR, TABLE = 1, 4, 16


# ----------------------------------------------------------------------------- the tiny ADE20K set
@pytest.fixture(scope='module')
def ade20k(tmp_path_factory):
    """Six drawn 64x64 scenes in ADE20K's layout (images/{training,validation}/*.jpg,
    annotations/.../*.png): a wall above a floor, a table (rectangle) and a ball (disk, labelled
    'other' = 0, which reduce_zero_label turns into 255, ignored)."""
    root = tmp_path_factory.mktemp('ade20k')
    rng = np.random.default_rng(0)
    for i in range(6):
        split = 'training' if i < 4 else 'validation'
        img = np.zeros((IMG, IMG, 3), np.uint8)
        label = np.zeros((IMG, IMG), np.uint8)
        horizon = int(rng.integers(24, 40))
        img[:horizon], label[:horizon] = (200, 180, 160), WALL
        img[horizon:], label[horizon:] = (60, 90, 120), FLOOR
        x, y = int(rng.integers(4, 30)), int(rng.integers(horizon - 10, horizon + 4))
        cv2.rectangle(img, (x, y), (x + 24, y + 14), (30, 40, 200), -1)
        cv2.rectangle(label, (x, y), (x + 24, y + 14), TABLE, -1)
        c = (int(rng.integers(44, 58)), int(rng.integers(8, 20)))
        cv2.circle(img, c, 5, (20, 220, 20), -1)
        cv2.circle(label, c, 5, 0, -1)
        img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        for sub, name, data in (('images', f'scene_{i}.jpg', img), ('annotations', f'scene_{i}.png',
                                                                    label)):
            os.makedirs(root / sub / split, exist_ok=True)
            cv2.imwrite(str(root / sub / split / name), data)
    return str(root)


def data_settings(data_root):
    """Config text: the tiny set through ADE20K's own pipeline, with 64 px crops."""
    return f'''
crop_size = ({IMG}, {IMG})
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, {IMG}), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, {IMG}), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
data_root = {data_root!r}
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
data_preprocessor = dict(size=crop_size)
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=4, by_epoch=False)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
randomness = dict(seed=0)
'''


def run(cmd):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f'{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
    return proc.stdout + proc.stderr


def train(config, work_dir, *options, resume=False):
    cmd = [sys.executable, 'tools/train.py', str(config), '--work-dir', str(work_dir)]
    return run(cmd + (['--resume'] if resume else []) +
               (['--cfg-options', *options] if options else []))


def logged_miou(work_dir):
    """The last mIoU the Runner logged (LocalVisBackend's scalars.json)."""
    values = []
    for path in sorted(glob.glob(osp.join(str(work_dir), '*', 'vis_data', 'scalars.json'))):
        for line in open(path):
            record = json.loads(line)
            if 'mIoU' in record:
                values.append(record['mIoU'])
    assert values, f'no mIoU logged in {work_dir}'
    return values[-1]


def our_miou(segmentor, data_root):
    """mIoU (percent) of ``segmentor`` on the validation scenes, computed here: labels read from
    the PNGs (0 ignored, v -> v - 1 as reduce_zero_label), predictions at the image size, IoU per
    class over the whole set, mean over the classes present in labels or predictions."""
    from mmseg.structures import SegDataSample
    segmentor.eval()
    inter, union = np.zeros(150), np.zeros(150)
    for path in sorted(glob.glob(osp.join(data_root, 'images', 'validation', '*.jpg'))):
        img = cv2.imread(path)
        label = cv2.imread(
            path.replace('images', 'annotations').replace('.jpg', '.png'), cv2.IMREAD_GRAYSCALE)
        sample = SegDataSample()
        sample.set_metainfo(
            dict(img_shape=img.shape[:2], ori_shape=img.shape[:2], pad_shape=img.shape[:2]))
        batch = dict(
            inputs=[torch.from_numpy(img).permute(2, 0, 1).contiguous()], data_samples=[sample])
        with torch.no_grad():
            pred = segmentor.test_step(batch)[0].pred_sem_seg.data[0].numpy()
        valid = label > 0
        gt, pr = label[valid].astype(int) - 1, pred[valid]
        for c in range(150):
            inter[c] += np.sum((gt == c) & (pr == c))
            union[c] += np.sum((gt == c) | (pr == c))
    present = union > 0
    return 100 * float(np.mean(inter[present] / union[present]))


def build(model_cfg):
    from mmseg.registry import MODELS
    return MODELS.build(model_cfg)


# ----------------------------------------------------------------------------- tiny models
def tiny_resnet50_classifier():
    """An mmpretrain ResNet-50 classifier, 8 channels wide at the stem (the student distilled on
    ImageNet, shrunk)."""
    return dict(
        _scope_='mmpretrain',
        type='ImageClassifier',
        backbone=dict(type='ResNet', depth=50, stem_channels=8, base_channels=8),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=256))


def tiny_upernet_r50():
    """mmseg's UPerNet R50 (ResNetV1c) config, shrunk: the student of the distillation config."""
    m = load_model_config('mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py')
    m.pretrained = None
    m.data_preprocessor.size = (IMG, IMG)
    m.backbone.update(stem_channels=8, base_channels=8)
    m.decode_head.update(in_channels=[32, 64, 128, 256], channels=16)
    m.auxiliary_head.update(in_channels=128, channels=16)
    return m


def tiny_upernet_swin_t():
    """mmseg's UPerNet Swin-T config, shrunk (16 channels, 2x2 windows): the teacher."""
    m = load_model_config(
        'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py')
    m.data_preprocessor.size = (IMG, IMG)
    m.backbone.pop('init_cfg')
    m.backbone.update(embed_dims=16, num_heads=[1, 2, 4, 8], window_size=2)
    m.decode_head.update(in_channels=[16, 32, 64, 128], channels=16)
    m.auxiliary_head.update(in_channels=64, channels=16)
    return m


# ----------------------------------------------------------------------------- mmseg's own models
def test_upernet_builds_from_mmsegs_own_config_and_trains():
    """`import mmseg.models` works (ftfy, regex installed) and UPerNet R50 from mmseg's config, at
    its real widths, takes a loss step with both heads."""
    import mmseg.models  # noqa: F401
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    init_default_scope('mmseg')
    cfg = load_model_config('mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py')
    cfg.pretrained = None
    model = build(cfg)
    assert type(model).__name__ == 'EncoderDecoder'
    assert model.decode_head.conv_seg.out_channels == 150
    assert model.backbone.layer4[-1].conv3.out_channels == 2048
    size = 32  # the real widths: a small input keeps the step short
    sample = SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, 150, (1, size, size))))
    sample.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size)))
    model.data_preprocessor.size = (size, size)
    data = model.data_preprocessor(
        dict(
            inputs=[torch.randint(0, 256, (3, size, size), dtype=torch.uint8)] * 2,
            data_samples=[sample, sample]), True)
    model.train()
    losses = model(**data, mode='loss')
    assert {'decode.loss_ce', 'aux.loss_ce'} <= set(losses)
    assert all(torch.isfinite(v).all() for k, v in losses.items() if 'loss' in k)


# ----------------------------------------------------------------------------- the teacher's path
def test_segmentation_teacher_runs_tensor_mode_only_as_far_as_its_taps():
    init_default_scope('mmseg')
    from mmengine.optim import OptimWrapper
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    methods = Config.fromfile(SEG_KD_CFG).model.methods
    d = Distiller(
        student=tiny_upernet_r50(),
        teacher=tiny_upernet_swin_t(),
        input_shape=(3, IMG, IMG),
        methods=methods)
    # KD runs at the decode heads' resolution, 1/4 of the input, over the 150 classes.
    assert d.teacher.decode_head.conv_seg.out_channels == 150
    calls, t = [], d.teacher

    def record(name):
        return lambda *args, **kwargs: calls.append(name)

    # Instance attributes shadow the methods: any loss computation of the teacher is recorded.
    t.loss, t.decode_head.loss = record('loss'), record('decode_head.loss')
    t.decode_head.loss_by_feat = record('decode_head.loss_by_feat')
    t.auxiliary_head.loss = record('auxiliary_head.loss')
    ran = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o, _n=n: ran.append((_n, tuple(o.shape))))
        for n, m in (('aux', t.auxiliary_head.conv_seg), ('seg', t.decode_head.conv_seg))
    ]
    sample = SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, 150, (1, IMG, IMG))))
    sample.set_metainfo(dict(img_shape=(IMG, IMG), ori_shape=(IMG, IMG), pad_shape=(IMG, IMG)))
    data = dict(
        inputs=[torch.randint(0, 256, (3, IMG, IMG), dtype=torch.uint8)] * 2,
        data_samples=[sample, sample])
    d.train()
    log = d.train_step(data, OptimWrapper(torch.optim.SGD(d.parameters(), lr=1e-3)))
    assert {'decode.loss_ce', 'aux.loss_ce', 'loss_mgd', 'loss_pixel_kd'} <= set(log)
    assert calls == [], f'the teacher computed its loss: {calls}'
    assert ran == [('seg', (2, 150, IMG // 4, IMG // 4))], ran  # no auxiliary head
    # A method reading only the teacher's second stage (its first output is after the stage's
    # patch merging: 1/16, as ResNet's layer3): the rest of the teacher never runs.
    ran.clear()
    early = Distiller(
        student=tiny_upernet_r50(),
        teacher=tiny_upernet_swin_t(),
        input_shape=(3, IMG, IMG),
        methods=[
            dict(
                type='MGDLoss',
                mask='spatial',
                student_taps=dict(feat='backbone.layer3'),
                teacher_taps=dict(feat='backbone.stages.1'))
        ])
    early_hooks = [
        m.register_forward_hook(lambda *a: ran.append('head'))
        for m in (early.teacher.decode_head, early.teacher.decode_head.conv_seg,
                  early.teacher.backbone.stages[2])
    ]
    early.train_step(data, OptimWrapper(torch.optim.SGD(early.parameters(), lr=1e-3)))
    assert ran == []
    for h in hooks + early_hooks:
        h.remove()


# ----------------------------------------------------------------------------- fine-tuning
def test_upernet_fine_tunes_from_an_exported_student(tmp_path, ade20k):
    init_default_scope('mmpretrain')
    # A distillation checkpoint: ResNet-50 classifiers (shrunk), student + KD, as the Runner saves
    # them ({'meta', 'state_dict'} with 'student.' keys), then the student exported from it.
    cls = tiny_resnet50_classifier()
    d = Distiller(student=cls, teacher=cls, input_shape=(3, 32, 32), methods=[dict(type='KDLoss')])
    torch.save(dict(meta=dict(iter=10), state_dict=d.state_dict()), tmp_path / 'kd_iter_10.pth')
    export_student(str(tmp_path / 'kd_iter_10.pth'), str(tmp_path / 'student.pth'))
    exported = torch.load(tmp_path / 'student.pth', weights_only=True)['state_dict']
    backbone = {k[len('backbone.'):]: v for k, v in exported.items() if k.startswith('backbone.')}
    assert backbone and not any(k.startswith('student.') for k in exported)

    # Our downstream config, shrunk to the tiny student and data; its checkpoint entry is set from
    # the command line, as docs/downstream.md says.
    cfg = tmp_path / 'upernet_tiny.py'
    cfg.write_text(f'_base_ = [{FINETUNE_CFG!r}]\n' + data_settings(ade20k) + '''
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(stem_channels=8, base_channels=8),
    decode_head=dict(in_channels=[32, 64, 128, 256], channels=16),
    auxiliary_head=dict(in_channels=128, channels=16))
train_cfg = dict(max_iters=2, val_interval=2)
''')
    option = f'model.backbone.init_cfg.checkpoint={tmp_path / "student.pth"}'

    # The weights the Runner starts from (it calls init_weights() before the first step) are the
    # exported ones, every backbone tensor; a model without that init_cfg differs.
    full = Config.fromfile(str(cfg))
    full.merge_from_dict({'model.backbone.init_cfg.checkpoint': str(tmp_path / 'student.pth')})
    init_default_scope('mmseg')
    model = build(full.model)
    model.init_weights()
    state = model.backbone.state_dict()
    for key, value in backbone.items():
        assert torch.equal(state[key], value), key
    fresh = full.model.deepcopy()
    fresh.backbone.init_cfg = None
    fresh_model = build(fresh)
    fresh_model.init_weights()
    assert not torch.equal(fresh_model.backbone.conv1.weight, backbone['conv1.weight'])

    work = tmp_path / 'work'
    out = train(cfg, work, option)
    assert f'load backbone. in model from: {tmp_path / "student.pth"}' in out
    ckpt = torch.load(work / 'iter_2.pth', weights_only=False)
    assert ckpt['meta']['iter'] == 2
    # The logged mIoU is that of the saved model, recomputed here.
    model.load_state_dict(ckpt['state_dict'])
    assert logged_miou(work) == pytest.approx(our_miou(model, ade20k), abs=0.01)


SWIN = dict(embed_dims=16, depths=[2, 2, 6, 2], num_heads=[1, 2, 4, 8])
VIT = dict(embed_dims=32, num_layers=12, num_heads=2, feedforward_channels=64)
STUDENTS = {
    # downstream config: (the classifier's backbone, shrunk; the same settings in the segmentor;
    # the backbone's output widths)
    'upernet_resnet50-d-distilled_4xb4-160k_ade20k-512x512.py':
    (dict(type='ResNetV1d', depth=50, stem_channels=8,
          base_channels=8), dict(stem_channels=8, base_channels=8), [32, 64, 128, 256]),
    'upernet_swin-t-distilled_8xb2-160k_ade20k-512x512.py':
    (dict(type='SwinTransformer', arch=SWIN), dict(arch=SWIN), [16, 32, 64, 128]),
    'upernet_deit-s-distilled_8xb2-80k_ade20k-512x512.py':
    (dict(type='VisionTransformer', arch=VIT, img_size=32,
          patch_size=16), dict(arch=VIT, img_size=(IMG, IMG)), [32] * 4),
    'upernet_vit-b16-distilled_mln_8xb2-160k_ade20k-512x512.py':
    (dict(type='VisionTransformer', arch=VIT, img_size=32,
          patch_size=16), dict(arch=VIT, img_size=(IMG, IMG)), [32] * 4),
}


@pytest.mark.parametrize('name', sorted(STUDENTS))
def test_students_load_into_their_downstream_configs(name, tmp_path):
    """A ResNet-50-D / Swin / DeiT / ViT classifier of the kind the distillation configs train
    (mmpretrain's backbone, shrunk), exported, is what the UPerNet config's backbone starts from:
    every tensor of it, the ViT position embedding resized from the classifier's grid (32 px
    images) to the crops' grid (64 px)."""
    backbone, seg_backbone, widths = STUDENTS[name]
    kind = backbone['type']
    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    vit = kind == 'VisionTransformer'
    classifier = PRETRAIN_MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=backbone,
            neck=None if vit else dict(type='GlobalAveragePooling'),
            head=dict(
                type='VisionTransformerClsHead' if vit else 'LinearClsHead',
                num_classes=10,
                in_channels=widths[-1])))
    classifier.init_weights()
    torch.save(
        dict(state_dict={
            f'student.{k}': v
            for k, v in classifier.state_dict().items()
        }), tmp_path / 'kd.pth')
    export_student(str(tmp_path / 'kd.pth'), str(tmp_path / 'student.pth'))

    seg = Config.fromfile(osp.join(ROOT, 'configs', 'downstream', name)).model
    assert seg.backbone.type == f'mmpretrain.{kind}'
    seg.backbone.update(seg_backbone)
    seg.backbone.init_cfg.checkpoint = str(tmp_path / 'student.pth')
    if seg.get('neck'):
        seg.neck.update(in_channels=widths, out_channels=widths[0])
    seg.decode_head.update(in_channels=widths, channels=16)
    seg.auxiliary_head.update(in_channels=widths[seg.auxiliary_head.in_index], channels=16)
    init_default_scope('mmseg')
    model = build(seg)
    model.init_weights()
    loaded = model.backbone.state_dict()
    exported = {
        k[len('backbone.'):]: v
        for k, v in torch.load(tmp_path / 'student.pth', weights_only=True)['state_dict'].items()
        if k.startswith('backbone.')
    }
    for key in set(exported) & set(loaded):
        if vit and key == 'pos_embed':
            # (1, 1 + 2x2, D) -> (1, 1 + 4x4, D): the cls token's entry is kept as it is.
            assert loaded[key].shape == (1, 1 + (IMG // 16)**2, widths[0])
            assert torch.equal(loaded[key][:, 0], exported[key][:, 0])
        else:
            assert torch.equal(loaded[key], exported[key]), key
    # What differs is what the recipes differ in: the classifier's final LayerNorm, which mmseg's
    # ViT recipes do not have, and Swin's per-stage output norms 0-2, new in the segmentor.
    assert set(exported) - set(loaded) == ({'ln1.weight', 'ln1.bias'} if vit else set())
    assert set(loaded) - set(exported) == (
        {f'norm{i}.{p}'
         for i in range(3)
         for p in ('weight', 'bias')} if kind == 'SwinTransformer' else set())
    out = model.eval()(torch.zeros(1, 3, IMG, IMG), mode='tensor')
    # Class scores at 1/4 of the input (CNN and Swin first stages, the ViT's neck), or at the
    # patch grid, 1/16, for the DeiT-S recipe without a neck.
    stride = 16 if vit and not seg.get('neck') else 4
    assert out.shape == (1, 150, IMG // stride, IMG // stride)


# ----------------------------------------------------------------------------- distillation
def test_distillation_inside_segmentation_trains_evaluates_the_student_and_resumes(
        tmp_path, ade20k):
    init_default_scope('mmseg')
    # The teacher's weights: a tiny UPerNet Swin-T saved as mmseg saves it.
    teacher = build(tiny_upernet_swin_t())
    teacher.init_weights()
    torch.save(dict(meta={}, state_dict=teacher.state_dict()), tmp_path / 'teacher.pth')
    student, teacher_cfg = tiny_upernet_r50(), tiny_upernet_swin_t()
    cfg = tmp_path / 'seg_kd_tiny.py'
    cfg.write_text(f'_base_ = [{SEG_KD_CFG!r}]\n' + data_settings(ade20k) + f'''
model = dict(
    student={pprint.pformat(dict(_delete_=True, **student.to_dict()))},
    teacher={pprint.pformat(dict(_delete_=True, **teacher_cfg.to_dict()))},
    teacher_checkpoint={str(tmp_path / 'teacher.pth')!r},
    input_shape=(3, {IMG}, {IMG}))
# A random teacher: evaluated before training, not judged.
custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook', expected_top1=None, metric='mIoU')]
train_cfg = dict(max_iters=2, val_interval=2)
''')
    work = tmp_path / 'work'
    out = train(cfg, work)
    assert 'teacher mIoU' in out
    ckpt = torch.load(work / 'iter_2.pth', weights_only=False)
    keys = ckpt['state_dict'].keys()
    assert any(k.startswith('student.backbone.') for k in keys)
    assert any(k.startswith('methods.0.') for k in keys)  # MGD's projector and generator
    assert not any(k.startswith('teacher') for k in keys), 'the teacher is in the checkpoint'

    # Resume the teacher-less checkpoint (the teacher is rebuilt from its config and file) and
    # train on to iteration 4.
    out = train(cfg, work, 'train_cfg.max_iters=4', 'train_cfg.val_interval=4', resume=True)
    assert 'resumed' in out.lower()
    ckpt = torch.load(work / 'iter_4.pth', weights_only=False)
    assert ckpt['meta']['iter'] == 4
    assert len(glob.glob(str(work / '*' / 'vis_data' / 'scalars.json'))) == 2
    # Validation evaluated the student: its saved weights give the logged mIoU.
    model = build(student)
    model.load_state_dict({
        k[len('student.'):]: v
        for k, v in ckpt['state_dict'].items() if k.startswith('student.')
    })
    assert logged_miou(work) == pytest.approx(our_miou(model, ade20k), abs=0.01)
