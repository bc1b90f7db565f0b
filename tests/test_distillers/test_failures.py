"""What fails how: faults and bad inputs get an error that names the cause (docs/distiller.md)."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from conftest import KD_CFG, ROOT, tiny_cfg
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import mmkd_ext  # noqa: F401
from mmkd_ext.distillers import Distiller
from mmkd_ext.losses import DistillLoss
from mmkd_ext.registry import MODELS


def grey_resnet(width=4, num_classes=10, **pre):
    """A tiny mmpretrain classifier on 1 x 8 x 8 images (the digits' shape)."""
    return dict(
        type='ImageClassifier',
        data_preprocessor=dict(num_classes=num_classes, mean=[78.0], std=[96.0], **pre),
        backbone=dict(
            type='ResNet_CIFAR', depth=18, in_channels=1, stem_channels=width, base_channels=width),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=8 * width))


def distiller(**kw):
    init_default_scope('mmpretrain')
    args = dict(
        student=grey_resnet(4),
        teacher=grey_resnet(8),
        input_shape=(1, 8, 8),
        methods=[dict(type='KDLoss')])
    args.update(kw)
    return Distiller(**args)


def digits_batch(n=4):
    from mmpretrain.structures import DataSample
    return dict(
        inputs=[torch.randint(0, 255, (1, 8, 8), dtype=torch.uint8) for _ in range(n)],
        data_samples=[DataSample().set_gt_label(i % 10) for i in range(n)])


# ----------------------------------------------------------------------------- logged loss
def _check_total(log):
    terms = {k: float(v) for k, v in log.items() if 'loss' in k and k != 'loss'}
    assert terms, log
    assert float(log['loss']) == pytest.approx(sum(terms.values()), rel=1e-5), (log, terms)
    return terms


def test_logged_loss_is_the_optimised_total_mmpretrain():
    d = distiller(student_loss_weight=0.5)
    d.train()
    log = d.train_step(digits_batch(), OptimWrapper(torch.optim.SGD(d.parameters(), lr=0.0)))
    terms = _check_total(log)
    assert set(terms) == {'loss_student', 'loss_kd'}
    # The student's term is its own cross-entropy, scaled by student_loss_weight.
    d.eval()
    data = d.data_preprocessor(digits_batch(), True)
    assert 'loss' in d.student.loss(**data)  # what mmpretrain calls it; renamed for the log


def test_logged_loss_is_the_optimised_total_in_a_runner(tmp_path, teacher_ckpt):
    seen = []

    class Record(Hook):

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            seen.append({k: float(v) for k, v in outputs.items()})

    runner = Runner.from_cfg(tiny_cfg(KD_CFG, tmp_path, teacher_checkpoint=teacher_ckpt))
    runner.register_hook(Record(), priority='LOWEST')
    runner.train()
    assert seen
    for log in seen:
        _check_total(log)
    logged = runner.message_hub.get_scalar('train/loss').data[0]
    assert logged[-1] == pytest.approx(seen[-1]['loss'])


def test_logged_loss_is_the_optimised_total_mmdet():
    from mmdet.testing import demo_mm_inputs

    from mmkd_ext.utils.config import load_model_config
    init_default_scope('mmdet')
    cfg = load_model_config('mmdet::retinanet/retinanet_r18_fpn_1x_coco.py')
    cfg.backbone.init_cfg = None
    d = Distiller(
        student=cfg,
        teacher=cfg.deepcopy(),
        input_shape=(3, 64, 64),
        methods=[
            dict(
                type='FitNetLoss',
                student_taps=dict(feats='backbone.layer4'),
                teacher_taps=dict(feats='backbone.layer4'))
        ])
    log = d.train_step(
        demo_mm_inputs(2, [[3, 64, 64], [3, 64, 64]], num_classes=80),
        OptimWrapper(torch.optim.SGD(d.parameters(), lr=0.0)))
    assert {'loss_cls', 'loss_bbox', 'loss_fitnet'} <= set(_check_total(log))


def test_logged_loss_is_the_optimised_total_mmseg():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    init_default_scope('mmseg')
    norm = dict(type='BN', requires_grad=True)
    seg = dict(
        _scope_='mmseg',
        type='EncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor',
            mean=[123.7, 116.3, 103.5],
            std=[58.4, 57.1, 57.4],
            bgr_to_rgb=True,
            size=(32, 32)),
        backbone=dict(
            type='ResNetV1c',
            depth=18,
            base_channels=8,
            stem_channels=8,
            norm_cfg=norm,
            out_indices=(0, 1, 2, 3)),
        decode_head=dict(
            type='FCNHead',
            in_channels=64,
            in_index=3,
            channels=16,
            num_convs=1,
            num_classes=4,
            norm_cfg=norm,
            align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    d = Distiller(
        student=seg,
        teacher=seg,
        input_shape=(3, 32, 32),
        methods=[
            dict(
                type='FitNetLoss',
                student_taps=dict(feats='backbone.layer4'),
                teacher_taps=dict(feats='backbone.layer4'))
        ])
    samples = []
    for _ in range(2):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, 4, (1, 32, 32)))
        s.set_metainfo(dict(img_shape=(32, 32), ori_shape=(32, 32), pad_shape=(32, 32)))
        samples.append(s)
    data = dict(
        inputs=[torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)] * 2, data_samples=samples)
    log = d.train_step(data, OptimWrapper(torch.optim.SGD(d.parameters(), lr=0.0)))
    assert {'decode.loss_ce', 'loss_fitnet'} <= set(_check_total(log))


# ----------------------------------------------------------------------------- taps in place
def test_tap_overwritten_in_place_is_an_error_at_build():
    # ResNet's stem: conv1 -> bn1 -> ReLU(inplace=True). A tap on the BN would hold post-ReLU
    # values on the student, but true BN outputs on an early-stopped teacher.
    with pytest.raises(RuntimeError, match="student tap 'backbone.bn1' was modified in place"):
        distiller(methods=[
            dict(
                type='FitNetLoss',
                student_taps=dict(feats='backbone.bn1'),
                teacher_taps=dict(feats='backbone.bn1'))
        ])
    # The activation after it is the right tap and builds.
    distiller(methods=[
        dict(
            type='FitNetLoss',
            student_taps=dict(feats='backbone.relu'),
            teacher_taps=dict(feats='backbone.relu'))
    ])


# ----------------------------------------------------------------------------- teacher swap
def test_resume_with_another_teacher_is_refused_unless_allowed(tmp_path, teacher_ckpt):
    work = tmp_path / 'run'
    Runner.from_cfg(tiny_cfg(KD_CFG, work, teacher_checkpoint=teacher_ckpt)).train()
    ckpt = torch.load(teacher_ckpt, weights_only=False)
    other = tmp_path / 'other_teacher.pth'
    torch.save(
        {
            'state_dict': {
                k: (v + 0.01 if v.is_floating_point() else v)
                for k, v in ckpt['state_dict'].items()
            }
        }, other)

    def resume(teacher, **kw):
        cfg = tiny_cfg(KD_CFG, work, max_epochs=2, teacher_checkpoint=str(teacher), **kw)
        cfg.resume = True
        return Runner.from_cfg(cfg)

    with pytest.raises(RuntimeError, match='trained with another teacher'):
        resume(other).train()
    # The same teacher resumes; another one does when the user says so.
    resume(teacher_ckpt).train()
    cfg = tiny_cfg(
        KD_CFG, work, max_epochs=3, teacher_checkpoint=str(other), allow_teacher_change=True)
    cfg.resume = True
    Runner.from_cfg(cfg).train()


# ----------------------------------------------------------------------------- non-finite
@MODELS.register_module(force=True)
class _NaNAt(DistillLoss):
    """Test probe: a finite term until iteration `at`, then NaN."""
    default_student_taps = dict(logits='head')
    default_teacher_taps = dict(logits='head')
    default_name = 'probe'

    def __init__(self, at=2, **kw):
        super().__init__(**kw)
        self.at = at

    def forward(self, s, t, data_samples=None, progress=None):
        value = s['logits'].float().mean() * 0
        return {self.term(): value + (float('nan') if progress.iter >= self.at else 0.0)}


def test_nan_loss_stops_training_naming_term_and_iteration(tmp_path, teacher_ckpt):
    cfg = tiny_cfg(KD_CFG, tmp_path, max_epochs=2, teacher_checkpoint=teacher_ckpt)
    cfg.model.methods = [dict(type='KDLoss'), dict(type='_NaNAt', at=2)]
    with pytest.raises(FloatingPointError, match=r"'loss_probe' is not finite at iteration 2"):
        Runner.from_cfg(cfg).train()
    assert not osp.exists(osp.join(str(tmp_path), 'epoch_1.pth')), 'a NaN checkpoint was saved'


# ----------------------------------------------------------------------------- bad inputs
def test_input_shape_is_inferred_or_named():
    # Grey 8x8 ResNet: channels from the preprocessor / first conv, no input_shape needed.
    d = distiller(input_shape=None)
    assert d.input_shape[0] == 1
    # A ViT that takes 16x24 inputs: the size comes from its patch embedding.
    vit = dict(
        type='ImageClassifier',
        backbone=dict(
            type='VisionTransformer',
            arch=dict(embed_dims=24, num_layers=1, num_heads=2, feedforward_channels=48),
            img_size=(16, 24),
            patch_size=4),
        neck=None,
        head=dict(type='VisionTransformerClsHead', num_classes=10, in_channels=24))
    d = distiller(student=vit, teacher=vit, input_shape=None)
    assert d.input_shape == (3, 16, 24)
    # A wrong explicit shape says what to set.
    with pytest.raises(RuntimeError, match=r'set `input_shape=\(C, H, W\)`'):
        distiller(input_shape=(3, 8, 8))


def test_model_dict_without_scope_names_default_scope(tmp_path):
    cfg = tmp_path / 'noscope.py'
    cfg.write_text(
        "custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)\n"
        "net = dict(type='ImageClassifier', backbone=dict(type='ResNet_CIFAR', depth=18),\n"
        "           neck=dict(type='GlobalAveragePooling'),\n"
        "           head=dict(type='LinearClsHead', num_classes=10, in_channels=512))\n"
        "model = dict(type='mmkd_ext.Distiller', student=net, teacher=net,\n"
        "             methods=[dict(type='KDLoss')])\n")
    code = ('from mmengine.config import Config; from mmengine.registry import MODELS; '
            'import mmkd_ext; MODELS.build(Config.fromfile(%r).model)' % str(cfg))
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Cannot build the student 'ImageClassifier'" in proc.stderr, proc.stderr[-2000:]
    assert 'default_scope' in proc.stderr


def test_methods_as_dict_is_an_error():
    with pytest.raises(TypeError, match='must be a list of loss configs'):
        distiller(methods=dict(type='KDLoss'))


def test_tap_that_is_not_a_string_is_an_error():
    with pytest.raises(TypeError, match=r"student_taps\['logits'\] must be a module path"):
        distiller(methods=[dict(type='KDLoss', student_taps=dict(logits=3))])


def test_method_that_is_not_a_distill_loss_is_an_error():
    with pytest.raises(TypeError, match='not an mmkd_ext distillation loss'):
        distiller(methods=[dict(type='CrossEntropyLoss')])


def test_logit_widths_that_differ_fail_at_build():
    with pytest.raises(ValueError, match='gives 10 classes and the teacher tap .* 12'):
        distiller(teacher=grey_resnet(8, num_classes=12))
