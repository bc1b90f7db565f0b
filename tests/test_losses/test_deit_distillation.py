"""DeiT's distillation through the distillation token: the teacher's top-1 reaches the distillation
head, the true label the class head; evaluation averages both; the configs/deit configs train."""
import copy
import glob
import math
import os.path as osp

import pytest
import torch
from conftest import ROOT
from mmengine.config import Config, ConfigDict
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmpretrain.structures import DataSample

import mmkd_ext  # noqa: F401
from mmkd_ext.distillers import Distiller
from mmkd_ext.losses import DeiTDistillationLoss
from mmkd_ext.utils.config import load_model_config

C = 5  # classes
TEACHER_TOP1 = 4  # the fixed teacher always predicts class 4 ...
LABELS = [1, 3]  # ... while the true labels are 1 and 3


def student_cfg(head='mmkd_ext.TrainableDeiTClsHead', width=16):
    return dict(
        type='ImageClassifier',
        _scope_='mmpretrain',
        backbone=dict(
            type='DistilledVisionTransformer',
            arch=dict(embed_dims=width, num_layers=1, num_heads=2, feedforward_channels=2 * width),
            img_size=16,
            patch_size=8,
            drop_path_rate=0.0),
        neck=None,
        head=dict(
            type=head,
            num_classes=C,
            in_channels=width,
            loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))


def teacher_cfg():
    return dict(
        type='ImageClassifier',
        _scope_='mmpretrain',
        backbone=dict(
            type='VisionTransformer',
            arch=dict(embed_dims=8, num_layers=1, num_heads=2, feedforward_channels=16),
            img_size=16,
            patch_size=8),
        neck=None,
        head=dict(type='VisionTransformerClsHead', num_classes=C, in_channels=8))


def make_distiller(**kw):
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    d = Distiller(
        student=student_cfg(**kw),
        teacher=teacher_cfg(),
        input_shape=(3, 16, 16),
        student_loss_weight=0.5,
        methods=[dict(type='DeiTDistillationLoss', loss_weight=0.5)])
    # A fixed teacher: logits = the head's bias whatever the input, top-1 = TEACHER_TOP1.
    with torch.no_grad():
        fc = d.teacher.head.layers.head
        fc.weight.zero_()
        fc.bias.copy_(torch.tensor([0.5, 1.0, -1.0, 2.0, 3.0]))
    for p in d.student.head.parameters():  # non-zero heads (mmpretrain initialises them to 0)
        torch.nn.init.normal_(p, std=0.5)
    return d


def ce_by_hand(logits, label):
    """-log softmax(logits)[label] with the math module, for one sample (a list of floats)."""
    m = max(logits)
    return -(logits[label] - m - math.log(sum(math.exp(v - m) for v in logits)))


def softmax(row):
    e = [math.exp(v - max(row)) for v in row]
    return [v / sum(e) for v in e]


def test_loss_formula_by_hand():
    z_s = [[1.0, 2.0, 0.5, -1.0, 0.0], [0.2, -0.3, 1.5, 0.0, 0.7]]
    z_t = [[0.0, 0.1, 0.2, 0.3, 2.0], [3.0, 0.0, 0.0, 0.0, 0.0]]
    loss = DeiTDistillationLoss(loss_weight=0.5)
    assert loss.student_taps == dict(logits='head.layers.head_dist')
    out = loss(dict(logits=torch.tensor(z_s)), dict(logits=torch.tensor(z_t)))
    expected = 0.5 * (ce_by_hand(z_s[0], 4) + ce_by_hand(z_s[1], 0)) / 2
    assert list(out) == ['loss_deit_distill']
    assert out['loss_deit_distill'].item() == pytest.approx(expected, rel=1e-6)


def test_teacher_label_reaches_the_distillation_head_and_true_label_the_class_head():
    d = make_distiller()
    d.train()
    x = torch.randn(2, 3, 16, 16)
    samples = [DataSample().set_gt_label(y) for y in LABELS]
    with torch.no_grad():
        assert d.teacher(x, mode='tensor').argmax(1).tolist() == [TEACHER_TOP1] * 2
        cls_tok, dist_tok = d.student.backbone(x)[-1]
        head = d.student.head.layers
        z_cls = (cls_tok @ head.head.weight.T + head.head.bias).tolist()
        z_dist = (dist_tok @ head.head_dist.weight.T + head.head_dist.bias).tolist()
    losses = d.loss(x, samples)
    assert set(losses) == {'loss_student', 'loss_deit_distill'}
    # The student's own loss: the true label on the class head only, times 0.5.
    expected_cls = 0.5 * sum(ce_by_hand(z, y) for z, y in zip(z_cls, LABELS)) / 2
    assert losses['loss_student'].item() == pytest.approx(expected_cls, rel=1e-5)
    # The distillation loss: the teacher's top-1 on the distillation head, times 0.5.
    expected_dist = 0.5 * sum(ce_by_hand(z, TEACHER_TOP1) for z in z_dist) / 2
    assert losses['loss_deit_distill'].item() == pytest.approx(expected_dist, rel=1e-5)
    # Gradients of the two heads' biases: d/db mean CE = mean(softmax - one_hot(target)).
    sum(losses.values()).backward()
    for bias, logits, targets in ((head.head.bias, z_cls, LABELS), (head.head_dist.bias, z_dist,
                                                                    [TEACHER_TOP1] * 2)):
        expected = [0.0] * C
        for z, t in zip(logits, targets):
            for c, p in enumerate(softmax(z)):
                expected[c] += 0.5 * (p - (c == t)) / 2
        assert bias.grad.tolist() == pytest.approx(expected, abs=1e-6)


def test_mixed_labels_reach_the_class_head_only():
    d = make_distiller()
    d.train()
    x = torch.randn(2, 3, 16, 16)
    mixed = [[0.0, 0.6, 0.4, 0.0, 0.0], [0.0, 0.0, 0.0, 0.3, 0.7]]
    samples = [
        DataSample().set_gt_label(y).set_gt_score(torch.tensor(m)) for y, m in zip(LABELS, mixed)
    ]
    with torch.no_grad():
        cls_tok, dist_tok = d.student.backbone(x)[-1]
        head = d.student.head.layers
        z_cls = (cls_tok @ head.head.weight.T + head.head.bias).tolist()
        z_dist = (dist_tok @ head.head_dist.weight.T + head.head_dist.bias).tolist()
    losses = d.loss(x, samples)
    soft_ce = sum(-sum(m[c] * math.log(softmax(z)[c]) for c in range(C))
                  for z, m in zip(z_cls, mixed)) / 2
    assert losses['loss_student'].item() == pytest.approx(0.5 * soft_ce, rel=1e-5)
    # The distillation head still learns the teacher's top-1, not the mixed label.
    expected_dist = 0.5 * sum(ce_by_hand(z, TEACHER_TOP1) for z in z_dist) / 2
    assert losses['loss_deit_distill'].item() == pytest.approx(expected_dist, rel=1e-5)


def test_evaluation_averages_the_two_heads():
    d = make_distiller()
    d.eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        cls_tok, dist_tok = d.student.backbone(x)[-1]
        head = d.student.head.layers
        expected = (head.head(cls_tok) + head.head_dist(dist_tok)) / 2
        out = d(x, mode='tensor')
        preds = d(x, [DataSample() for _ in range(3)], mode='predict')
    assert torch.allclose(out, expected, atol=1e-6)
    assert [int(p.pred_label) for p in preds] == expected.argmax(1).tolist()


def test_mmpretrains_untrainable_head_is_refused():
    with pytest.raises(TypeError, match='TrainableDeiTClsHead'):
        make_distiller(head='DeiTClsHead')


def test_one_training_step_through_the_distiller():
    d = make_distiller()
    d.train()
    data = dict(
        inputs=[torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8) for _ in LABELS],
        data_samples=[DataSample().set_gt_label(y) for y in LABELS])
    before = {n: p.detach().clone() for n, p in d.named_parameters() if p.requires_grad}
    teacher_before = [p.detach().clone() for p in d.teacher.parameters()]
    optim = OptimWrapper(torch.optim.SGD([p for p in d.parameters() if p.requires_grad], lr=0.1))
    log = {k: float(torch.as_tensor(v).detach()) for k, v in d.train_step(data, optim).items()}
    assert set(log) == {'loss', 'loss_student', 'loss_deit_distill'}  # 'loss': the optimised sum
    assert log['loss'] == pytest.approx(log['loss_student'] + log['loss_deit_distill'], rel=1e-5)
    assert all(math.isfinite(v) for v in log.values())
    for name in ('head.layers.head.weight', 'head.layers.head_dist.weight', 'backbone.dist_token',
                 'backbone.cls_token'):
        assert not torch.equal(
            dict(d.student.named_parameters())[name].detach(), before['student.' + name]), name
    assert all(torch.equal(a, b) for a, b in zip(d.teacher.parameters(), teacher_before))


# ------------------------------------------------------------------------------- configs
DEIT_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'deit', '*.py')))


def shrink_student(model_cfg, width=16):
    cfg = ConfigDict(copy.deepcopy(model_cfg))
    cfg.backbone.update(
        arch=dict(embed_dims=width, num_layers=2, num_heads=2, feedforward_channels=2 * width),
        img_size=32,
        patch_size=8)
    cfg.head.in_channels = width
    cfg.pop('init_cfg', None)
    return cfg


def test_there_are_three_deit_configs():
    assert [osp.basename(p) for p in DEIT_CONFIGS] == [
        'regnety-16gf_deit-distill_deit-b_16xb64-300e_in1k.py',
        'regnety-16gf_deit-distill_deit-s_4xb256-300e_in1k.py',
        'regnety-16gf_deit-distill_deit-t_4xb256-300e_in1k.py'
    ]


@pytest.mark.parametrize('path', DEIT_CONFIGS, ids=osp.basename)
def test_deit_configs_train_one_iteration(path):
    """The config's student (shrunk), weights and loss, with a tiny mmpretrain stand-in teacher
    (the real one, timm's RegNetY-16GF, is checked below when timm is installed)."""
    cfg = Config.fromfile(path)
    init_default_scope('mmpretrain')
    student = load_model_config(cfg.model.student)
    assert student.backbone.type == 'DistilledVisionTransformer'
    assert student.head.type == 'mmkd_ext.TrainableDeiTClsHead'
    assert [a.type for a in student.train_cfg.augments] == ['Mixup', 'CutMix']
    model_cfg = copy.deepcopy(cfg.model)
    methods = copy.deepcopy(model_cfg.methods)
    for m in methods:
        m.teacher_taps = dict(logits='head')
    stand_in = teacher_cfg()  # 1000 classes like the student (Mixup makes 1000-class labels)
    stand_in['backbone']['img_size'] = 32
    stand_in['head']['num_classes'] = 1000
    model_cfg.update(
        student=shrink_student(student),
        teacher=stand_in,
        teacher_checkpoint=None,
        input_shape=(3, 32, 32),
        methods=methods)
    d = Distiller(**{k: v for k, v in model_cfg.items() if k != 'type'})
    d.train()
    data = dict(
        inputs=[torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8) for _ in range(4)],
        data_samples=[DataSample().set_gt_label(i * 7) for i in range(4)])
    optim = OptimWrapper(torch.optim.SGD([p for p in d.parameters() if p.requires_grad], lr=1e-3))
    log = {k: float(torch.as_tensor(v).detach()) for k, v in d.train_step(data, optim).items()}
    assert set(log) == {'loss', 'loss_student', 'loss_deit_distill'}
    assert all(math.isfinite(v) for v in log.values())


def test_regnety_teacher_config_with_timm():
    pytest.importorskip('timm')
    path = osp.join(ROOT, 'configs', 'deit', 'regnety-16gf_deit-distill_deit-t_4xb256-300e_in1k.py')
    cfg = Config.fromfile(path)
    init_default_scope('mmpretrain')
    student = shrink_student(load_model_config(cfg.model.student))
    d = Distiller(
        student=student,
        teacher=cfg.model.teacher,
        teacher_checkpoint=None,
        input_shape=(3, 32, 32),
        student_loss_weight=cfg.model.student_loss_weight,
        methods=cfg.model.methods)
    d.train()
    x = torch.randn(2, 3, 32, 32)
    losses = d.loss(x, [DataSample().set_gt_label(1), DataSample().set_gt_label(2)])
    assert set(losses) == {'loss_student', 'loss_deit_distill'}
    assert all(torch.isfinite(v) for v in losses.values())
