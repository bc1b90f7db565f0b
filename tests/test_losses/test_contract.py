"""The contract of every registered distillation loss, on a tiny real ViT student/teacher pair
(a DeiT student with class and distillation tokens, a plain ViT teacher, twice as wide).

Every ``DistillLoss`` subclass that mmkd_ext registers is built, set up with the shapes of its taps,
run on the pair's features and back-propagated: its terms are finite scalars named ``loss_*``; no
gradient reaches the teacher (its features or its parameters); gradient reaches the student's
features and every parameter of the loss itself (projectors, generators, mask tokens).
"""
import math

import pytest
import torch
from mmengine.registry import init_default_scope
from mmpretrain.structures import DataSample

import mmkd_ext  # noqa: F401
from mmkd_ext.distillers.taps import FeatureTaps, feature_shape
from mmkd_ext.losses import DistillLoss
from mmkd_ext.losses.base import Progress
from mmkd_ext.registry import MODELS

B, CLASSES, IMG, DEPTH = 2, 5, 16, 4
S_DIMS, T_DIMS = 16, 32

# Construction kwargs of each loss on the pair below (taps that have no default, or whose default
# does not fit a ViT). Every loss the package registers must have an entry.
SETTINGS = {
    'KDLoss':
    dict(tau=2.0),
    'HardKDLoss':
    dict(),
    'DeiTDistillationLoss':
    dict(),  # the student's head.layers.head_dist
    'NKDLoss':
    dict(),
    'DKDLoss':
    dict(warmup_epochs=2),
    'FitNetLoss':
    dict(),  # backbone.ln1
    'ViTKDLoss':
    dict(alpha=1.0, beta=1.0),  # layers.0, layers.1, ln1, patch_embed
    'MGDLoss':
    dict(
        alpha_mgd=1.0,
        student_taps=dict(feat='backbone.layers.3', grid='backbone.patch_embed'),
        teacher_taps=dict(feat='backbone.layers.3')),
    'SpectralKDLoss':
    dict(
        student_taps=dict(
            feats=['backbone.layers.0', 'backbone.layers.3'], grid='backbone.patch_embed'),
        teacher_taps=dict(
            feats=['backbone.layers.1', 'backbone.layers.3'], grid='backbone.patch_embed')),
    'OFALoss':
    dict(
        eps=1.5,
        student_taps=dict(stages=[f'backbone.layers.{i}' for i in range(4)],
                          grid='backbone.patch_embed')),
    'PATLoss':
    dict(
        student_taps=dict(
            stages=[f'backbone.layers.{i}' for i in range(DEPTH)], grid='backbone.patch_embed'),
        teacher_taps=dict(
            stages=[f'backbone.layers.{i}' for i in range(DEPTH)], grid='backbone.patch_embed'),
        raa=dict(embed_dims=32, num_heads=4),
        # (gate 0 gives the prompt stacks exactly zero gradient; SE hidden width 2 can be all dead)
        prompt=dict(gate_init=0.5, se_ratio=4)),
    'DualViewMimicLoss':
    dict(
        student_taps=dict(feat='backbone.layers.3', grid='backbone.patch_embed'),
        teacher_taps=dict(feat='backbone.ln1', grid='backbone.patch_embed')),
    'ScaleKDLoss':  # a ViT teacher: the proxy path runs its last block and ln1
    dict(
        tail_blocks=1,
        student_taps=dict(
            stage3='backbone.layers.2', stage4='backbone.layers.3', grid='backbone.patch_embed'),
        teacher_taps=dict(
            final='backbone.ln1', stage3='backbone.layers.2', grid='backbone.patch_embed')),
}
# Losses whose first call only prepares the state the next one uses (PAT: the feedback its prompts
# take from the previous step): they are called once before the call that is checked.
STATEFUL = {'PATLoss'}

LOSSES = sorted(name for name, cls in MODELS.module_dict.items() if isinstance(cls, type)
                and issubclass(cls, DistillLoss) and cls.__module__.startswith('mmkd_ext.'))


def tiny_vit(width, distilled=False):
    """A 4-block ViT on 16x16 images (a 4x4 patch grid); ``distilled``: DeiT's two extra tokens
    (class and distillation) and a DeiT head, as DeiT students have."""
    head = dict(type='mmkd_ext.TrainableDeiTClsHead') if distilled else dict(
        type='VisionTransformerClsHead')
    return MODELS.build(
        dict(
            type='ImageClassifier',
            _scope_='mmpretrain',
            backbone=dict(
                type='DistilledVisionTransformer' if distilled else 'VisionTransformer',
                img_size=IMG,
                patch_size=4,
                arch=dict(
                    embed_dims=width, num_layers=DEPTH, num_heads=2,
                    feedforward_channels=2 * width)),
            neck=None,
            head=dict(head, num_classes=CLASSES, in_channels=width)))


def record(model, paths, inputs):
    with FeatureTaps(model, paths).record() as store:
        model(inputs, mode='tensor')
    return store


def select(loss, role, store):
    return {
        name: [store[p]
               for p in loss.tap_paths(role, name)] if isinstance(value,
                                                                  (list, tuple)) else store[value]
        for name, value in getattr(loss, f'{role}_taps').items()
    }


def tensors(feats):
    """{tap name: value or [values]} -> [(name, tensor, is_tuple)] for every tensor in it."""
    out = []
    for name, value in feats.items():
        for v in value if isinstance(value, list) else [value]:
            out.append((name, v if torch.is_tensor(v) else v[0], not torch.is_tensor(v)))
    return out


def run_loss(loss_type, **extra):
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    student, teacher = tiny_vit(S_DIMS, distilled=True).train(), tiny_vit(T_DIMS).eval()
    # The teacher's parameters require gradients here (the distiller freezes them): a loss that
    # lets gradient into the teacher shows it.
    assert all(p.requires_grad for p in teacher.parameters())
    loss = MODELS.build(dict(type=loss_type, **SETTINGS[loss_type], **extra))
    paths = {
        role: [p for n in getattr(loss, f'{role}_taps') for p in loss.tap_paths(role, n)]
        for role in ('student', 'teacher')
    }
    inputs = torch.randn(B, 3, IMG, IMG)
    s_feats = select(loss, 'student', record(student, paths['student'], inputs))
    t_feats = select(loss, 'teacher', record(teacher, paths['teacher'], inputs))
    loss.setup({
        k: feature_shape(v)
        for k, v in s_feats.items()
    }, {
        k: feature_shape(v)
        for k, v in t_feats.items()
    }, student, teacher)
    if loss_type in STATEFUL:
        # (a loss that reruns the teacher reads its input from the teacher pass before each call)
        record(teacher, paths['teacher'], inputs)
        loss(s_feats, t_feats, None, progress=Progress(epoch=0, max_epochs=2, iter=0, max_iters=2))
        t_feats = select(loss, 'teacher', record(teacher, paths['teacher'], inputs))
    for _, t, _ in tensors(s_feats) + tensors(t_feats):
        t.retain_grad()
    samples = [DataSample().set_gt_label(i % CLASSES) for i in range(B)]
    out = loss(
        s_feats, t_feats, samples, progress=Progress(epoch=0, max_epochs=2, iter=0, max_iters=2))
    return loss, out, student, teacher, s_feats, t_feats


def test_every_registered_loss_is_covered():
    assert {'KDLoss', 'ViTKDLoss', 'SpectralKDLoss'} <= set(LOSSES), LOSSES


@pytest.mark.parametrize('name', LOSSES)
def test_loss_contract(name):
    if name not in SETTINGS:
        pytest.fail(f'{name} is a registered DistillLoss without an entry in SETTINGS of '
                    f'tests/test_losses/test_contract.py: add the construction kwargs (taps on the '
                    f'tiny ViT pair) it needs there.')
    loss, out, student, teacher, s_feats, t_feats = run_loss(name)
    # Terms: a non-empty dict of finite scalars, all named loss_{name}...
    assert isinstance(out, dict) and out, f'{name} returned no term'
    for key, value in out.items():
        assert key.startswith(f'loss_{loss.name}'), (name, key)
        assert torch.is_tensor(value) and value.dim() == 0, (key, value)
        assert math.isfinite(value.item()), (key, value)
    sum(out.values()).backward()
    # ...that send no gradient to the teacher,
    assert all(p.grad is None for p in teacher.parameters()), f'{name}: gradient in the teacher'
    if not loss.teacher_needs_grad:
        for tap, t, _ in tensors(t_feats):
            assert t.grad is None, f'{name}: gradient reached the teacher tap {tap!r}'
    # ...but to every tensor the student's taps gave (a (tokens, (h, w)) value may be read for its
    # grid only), to the student's parameters,
    for tap, t, is_tuple in tensors(s_feats):
        if not is_tuple:
            assert t.grad is not None and t.grad.abs().sum() > 0, (name, tap)
            assert torch.isfinite(t.grad).all(), (name, tap)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    # ...and to every parameter of the loss itself.
    for pname, p in loss.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f'{name}: no gradient in {pname}'
            assert torch.isfinite(p.grad).all(), (name, pname)


@pytest.mark.parametrize('name', LOSSES)
def test_loss_name_prefixes_every_term(name):
    if name not in SETTINGS:
        pytest.fail(f'{name}: add it to SETTINGS of tests/test_losses/test_contract.py.')
    _, out, *_ = run_loss(name)
    loss, renamed, *_ = run_loss(name, name='other')
    assert loss.name == 'other'
    default = MODELS.get(name).default_name
    assert sorted(renamed) == sorted('loss_other' + k[len(f'loss_{default}'):] for k in out)
