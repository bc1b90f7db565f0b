"""OFA (mmkd_ext/losses/ofa.py, mmkd_ext/projectors/ofa_exit_branch.py): the loss against
independent computations, the labels it uses, the exit branches' shapes for CNN and token
students, and training steps through the Distiller (the configs are trained by
tests/test_configs.py)."""
import math

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmpretrain.structures import DataSample

import mmkd_ext  # noqa: F401
from mmkd_ext.apis.export import export_student
from mmkd_ext.distillers import Distiller
from mmkd_ext.losses import OFALoss
from mmkd_ext.losses.ofa import ofa_loss
from mmkd_ext.projectors import OFAExitBranch
from mmkd_ext.projectors.ofa_exit_branch import PatchMerging2x2, SeparableDownBlock
from mmkd_ext.registry import MODELS

B, C = 4, 6


def logits(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, generator=g) * 2


def one_hot(labels):
    y = torch.zeros(len(labels), C)
    for i, c in enumerate(labels):
        y[i, c] = 1.0
    return y


# ------------------------------------------------------------------------------- the formula
def test_eps_1_is_soft_target_cross_entropy():
    z_s, z_t = logits(0), logits(1)
    y = one_hot([0, 3, 5, 1])
    # Written out with exp/sum, in float64: -sum_c p_t,c log p_s,c, mean over the batch.
    s, t = z_s.double(), z_t.double()
    p_t = t.exp() / t.exp().sum(1, keepdim=True)
    log_p_s = s - s.exp().sum(1, keepdim=True).log()
    expected = float(-(p_t * log_p_s).sum(1).mean())
    assert float(ofa_loss(z_s, z_t, y, eps=1.0)) == pytest.approx(expected, rel=1e-5)
    # The label does not matter at eps 1: (p + y) - y = p.
    assert float(ofa_loss(z_s, z_t, one_hot([2, 2, 2, 2]), 1.0)) == pytest.approx(expected, 1e-5)


@pytest.mark.parametrize('eps,temperature', [(1.5, 1.0), (2.0, 3.0)])
def test_eps_above_1_against_a_per_sample_loop(eps, temperature):
    z_s, z_t = logits(2), logits(3)
    labels = [1, 0, 4, 4]
    y = one_hot(labels)
    total = 0.0
    for b in range(B):
        es = [math.exp(float(v) / temperature) for v in z_s[b]]
        et = [math.exp(float(v) / temperature) for v in z_t[b]]
        p_s = [v / sum(es) for v in es]
        p_t = [v / sum(et) for v in et]
        for c in range(C):
            y_c = 1.0 if c == labels[b] else 0.0
            total += -((p_t[c] + y_c)**eps - y_c) * math.log(p_s[c])
    got = float(ofa_loss(z_s, z_t, y, eps, temperature))
    assert got == pytest.approx(total / B, rel=1e-5)
    # eps > 1 enlarges the target weight: (p + 1)^eps - 1 > p, so the loss differs from eps 1.
    assert got != pytest.approx(float(ofa_loss(z_s, z_t, y, 1.0, temperature)), rel=1e-3)


def test_teacher_gets_no_gradient():
    z_s, z_t = logits(4).requires_grad_(), logits(5).requires_grad_()
    ofa_loss(z_s, z_t, one_hot([0, 1, 2, 3]), 1.5).backward()
    assert z_t.grad is None and z_s.grad.abs().sum() > 0


# ------------------------------------------------------------------------------- the loss module
class _Head(torch.nn.Module):

    def __init__(self, dims):
        super().__init__()
        self.fc = torch.nn.Linear(dims, C)


class _Net(torch.nn.Module):

    def __init__(self, dims, extra=0):
        super().__init__()
        self.head = _Head(dims)
        self.backbone = torch.nn.Module()
        self.backbone.num_extra_tokens = extra


def samples(labels, soft=None):
    out = []
    for i, c in enumerate(labels):
        ds = DataSample().set_gt_label(c)
        if soft is not None:
            ds.set_gt_score(soft[i])
        out.append(ds)
    return out


def test_head_term_and_soft_labels():
    loss = OFALoss(eps=1.5, head_weight=0.5)
    loss.setup(dict(logits=(C, )), dict(logits=(C, )), _Net(8), _Net(8))
    z_s, z_t = logits(6), logits(7)
    out = loss(dict(logits=z_s), dict(logits=z_t), samples([1, 2, 3, 4]))
    assert set(out) == {'loss_ofa_head'}  # no stages tapped: the head term only
    assert float(out['loss_ofa_head']) == pytest.approx(
        0.5 * float(ofa_loss(z_s, z_t, one_hot([1, 2, 3, 4]), 1.5)), rel=1e-6)
    # Mixup/CutMix: 'argmax' takes the dominant class of the soft label, 'mix' the soft label.
    soft = torch.zeros(B, C)
    for i, (a, b) in enumerate([(0, 5), (2, 1), (3, 4), (4, 0)]):
        soft[i, a], soft[i, b] = 0.7, 0.3
    argmax = loss(dict(logits=z_s), dict(logits=z_t), samples([5, 5, 5, 5], soft))
    assert float(argmax['loss_ofa_head']) == pytest.approx(
        0.5 * float(ofa_loss(z_s, z_t, one_hot([0, 2, 3, 4]), 1.5)), rel=1e-6)
    mix = OFALoss(eps=1.5, head_weight=0.5, soft_label='mix')
    mix.setup(dict(logits=(C, )), dict(logits=(C, )), _Net(8), _Net(8))
    got = mix(dict(logits=z_s), dict(logits=z_t), samples([5, 5, 5, 5], soft))
    assert float(got['loss_ofa_head']) == pytest.approx(
        0.5 * float(ofa_loss(z_s, z_t, soft, 1.5)), rel=1e-6)


def test_bad_settings():
    with pytest.raises(ValueError, match='soft_label'):
        OFALoss(soft_label='mean')
    with pytest.raises(ValueError, match='eps'):
        OFALoss(eps=0)
    loss = OFALoss(eps=[1.0, 1.5], student_taps=dict(stages=['a', 'b']))
    with pytest.raises(ValueError, match='one value per stage'):
        loss.setup(
            dict(logits=(C, ), stages=[(4, 8, 8), (8, 4, 4)]), dict(logits=(C, )), _Net(8), _Net(8))


# ------------------------------------------------------------------------------- branches
def test_cnn_branches_follow_the_reference_layout():
    """ResNet-18 stages at 224 px: stage s gets 4 - s separable blocks that halve the map and
    double the channels, ending at max(C_s, C_t); stage 4 a 1x1 convolution."""
    shapes = [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
    teacher_dims = 768  # e.g. a ConvNeXt-T or Swin-T teacher
    loss = OFALoss(student_taps=dict(stages=['s1', 's2', 's3', 's4']))
    loss.setup(dict(logits=(C, ), stages=shapes), dict(logits=(C, )), _Net(512), _Net(768))
    for k, (branch, shape) in enumerate(zip(loss.branches, shapes), start=1):
        x = torch.randn(2, *shape)
        assert branch(x).shape == (2, C)
        if k < 4:
            blocks = list(branch.body)
            assert len(blocks) == 4 - k and all(isinstance(b, SeparableDownBlock) for b in blocks)
            for b in blocks:
                x = b(x)
            assert x.shape == (2, teacher_dims, 7, 7)
            assert [b[-3].out_channels
                    for b in blocks][:-1] == [shape[0] * 2**(i + 1) for i in range(3 - k)]
        else:
            assert isinstance(branch.body, torch.nn.Conv2d)
            assert branch.body(x).shape == (2, teacher_dims, 7, 7)
        assert branch.fc.in_features == teacher_dims


def test_token_branches_vit_and_swin():
    """DeiT-T (1 + 14x14 tokens, 192 wide): one merge to 7x7, 3/2/1/1 blocks, the class token;
    Swin-T (56/28/14/7 grids, 96..768 wide): 3/2/1/0 merges to 7x7 at the final width, the mean
    token."""
    vit = OFALoss(student_taps=dict(stages=['a', 'b', 'c', 'd']))
    vit.setup(
        dict(logits=(C, ), stages=[(197, 192)] * 4), dict(logits=(C, )), _Net(192, extra=1),
        _Net(768))
    for k, branch in enumerate(vit.branches, start=1):
        assert branch.num_extra == 1 and branch.grid == (14, 14)
        assert len(branch.mergers) == 1 and len(branch.blocks) == max(4 - k, 1)
        x = torch.randn(2, 197, 192)
        merged, grid = branch.mergers[0](x[:, 1:], (14, 14))
        assert grid == (7, 7) and merged.shape == (2, 49, 192)
        assert branch(x).shape == (2, C) and branch.fc.in_features == 192
    # The class token is the branch's output feature: changing only it changes the logits.
    branch = vit.branches[3].eval()
    x = torch.randn(1, 197, 192)
    y = x.clone()
    y[:, 0] += 1
    assert not torch.allclose(branch(x), branch(y))
    swin_shapes = [(3136, 96), (784, 192), (196, 384), (49, 768)]
    swin = OFALoss(student_taps=dict(stages=['a', 'b', 'c', 'd']))
    swin.setup(dict(logits=(C, ), stages=swin_shapes), dict(logits=(C, )), _Net(768), _Net(512))
    for k, (branch, shape) in enumerate(zip(swin.branches, swin_shapes), start=1):
        assert len(branch.mergers) == 4 - k and len(branch.blocks) == max(4 - k, 1)
        x = torch.randn(1, *shape)
        tokens, grid = x, branch.grid
        for m in branch.mergers:
            tokens, grid = m(tokens, grid)
        assert grid == (7, 7) and tokens.shape == (1, 49, 768)
        assert branch(x).shape == (1, C) and branch.fc.in_features == 768


def test_patch_merging_groups_2x2_neighbours():
    merge = PatchMerging2x2(1, 4, act=False)
    with torch.no_grad():
        merge.reduction.weight.copy_(torch.eye(4))
    merge.norm = torch.nn.Identity()  # look at the gathered values themselves
    x = torch.arange(16.).reshape(1, 16, 1)  # a 4x4 grid numbered row-major
    out, grid = merge(x, (4, 4))
    assert grid == (2, 2)
    # top-left 2x2 cell holds 0, 1, 4, 5: order (0,0), (1,0), (0,1), (1,1) -> 0, 4, 1, 5
    assert out[0, 0].tolist() == [0., 4., 1., 5.]
    assert out[0, 3].tolist() == [10., 14., 11., 15.]


def test_branch_checks_its_input():
    branch = OFAExitBranch((8, 8, 8), 2, C, 16)
    with pytest.raises(ValueError, match='built for features of shape'):
        branch(torch.randn(1, 8, 16, 16))
    with pytest.raises(ValueError, match='square grid'):
        loss = OFALoss(student_taps=dict(stages=['a']))
        loss.setup(dict(logits=(C, ), stages=[(12, 8)]), dict(logits=(C, )), _Net(8), _Net(8))


# ------------------------------------------------------------------------------- distiller
def tiny_resnet():
    return dict(
        type='ImageClassifier',
        _scope_='mmpretrain',
        backbone=dict(type='ResNet', depth=18, stem_channels=8, base_channels=8, out_indices=(3, )),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=C, in_channels=64))


def tiny_vit_teacher():
    return dict(
        type='ImageClassifier',
        _scope_='mmpretrain',
        backbone=dict(
            type='VisionTransformer',
            img_size=32,
            patch_size=8,
            arch=dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)),
        neck=None,
        head=dict(type='VisionTransformerClsHead', num_classes=C, in_channels=32))


def test_training_steps_through_the_distiller(tmp_path):
    """ViT teacher -> ResNet student with branches on layer1-4: a few SGD steps give finite terms,
    every branch gets gradient, the teacher none, and the exported student has no branch."""
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    d = Distiller(
        student=tiny_resnet(),
        teacher=tiny_vit_teacher(),
        input_shape=(3, 32, 32),
        methods=[
            dict(
                type='OFALoss',
                eps=1.5,
                student_taps=dict(stages=[f'backbone.layer{i}' for i in range(1, 5)]))
        ])
    assert len(d.methods[0].branches) == 4
    assert d.methods[0].branches[0].fc.in_features == 64  # max(64 student, 32 teacher)
    optim = OptimWrapper(torch.optim.SGD(d.parameters(), lr=0.01))
    g = torch.Generator().manual_seed(0)
    data = dict(
        inputs=[
            torch.randint(0, 256, (3, 32, 32), generator=g, dtype=torch.uint8) for _ in range(4)
        ],
        data_samples=[DataSample().set_gt_label(i % C) for i in range(4)])
    d.train()
    teacher_before = {k: v.clone() for k, v in d.teacher.state_dict().items()}
    branch_before = [p.detach().clone() for p in d.methods.parameters()]
    # One backward by hand: every branch parameter gets gradient (train_step clears them).
    losses = d(**d.data_preprocessor(data, True), mode='loss')
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    for name, p in d.methods.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    optim.zero_grad()
    for _ in range(3):
        log = d.train_step(data, optim)
        terms = {k: float(v.detach()) for k, v in log.items()}
        assert {f'loss_ofa_stage{k}' for k in range(1, 5)} | {'loss_ofa_head'} <= set(terms)
        assert all(math.isfinite(v) for v in terms.values()), terms
    assert all(not torch.equal(a, b) for a, b in zip(branch_before, d.methods.parameters()))
    assert all(p.grad is None for p in d.teacher.parameters())
    for k, v in d.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k
    # The exported student carries no branch weights and loads into the plain student.
    src, dst = tmp_path / 'ofa.pth', tmp_path / 'student.pth'
    torch.save({'state_dict': d.state_dict()}, src)
    assert any(k.startswith('methods.0.branches.') for k in d.state_dict())
    out = export_student(str(src), str(dst))
    assert not any('branch' in k or k.startswith('methods') for k in out['state_dict'])
    student = MODELS.build(tiny_resnet())
    missing, unexpected = student.load_state_dict(out['state_dict'], strict=True)
    assert not missing and not unexpected
