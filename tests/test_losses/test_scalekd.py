"""ScaleKD (mmkd_ext/losses/scalekd.py): the views against a DCT computed here, the composition on
real (narrow) mmpretrain teachers and students inside the Distiller: where autograd runs, what
holds teacher weights, CAP shapes for CNN / ViT / Mixer students and Swin / ViT teachers at two
input sizes, a few training steps.

(CrossAttentionProjector alone: tests/test_projectors; the proxy path alone: tests/test_utils/
test_teacher_tail.py; the contract every loss meets: test_contract.py.)
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.model import ExponentialMovingAverage
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmpretrain.structures import DataSample

import mmkd_ext  # noqa: F401
from mmkd_ext.apis.export import export_student
from mmkd_ext.distillers import Distiller
from mmkd_ext.distillers.distiller import _select
from mmkd_ext.losses import DualViewMimicLoss, ScaleKDLoss
from mmkd_ext.losses.scalekd import alternative_view, direct_view, remove_dc, view_distance
from mmkd_ext.projectors import CrossAttentionProjector

B, CLASSES = 2, 5
OTHER = (240, 304)  # another input size: odd stage-3 grid 15 x 19 for a Swin teacher
PRE = dict(
    type='ClsDataPreprocessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True,
    num_classes=CLASSES)


# ----------------------------------------------------------------------------------- the views
def dct_matrix(n):
    """Orthonormal DCT-II matrix D (n x n): coefficients = D x, x = D^T coefficients."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


@pytest.mark.parametrize('hw', [(7, 7), (5, 8)])
def test_alternative_view_is_the_dct_without_its_dc_coefficient(hw):
    h, w = hw
    dh, dw = dct_matrix(h), dct_matrix(w)
    assert torch.allclose(dh @ dh.T, torch.eye(h, dtype=torch.float64), atol=1e-12)
    x = torch.randn(3, 4, h, w, dtype=torch.float64) + 2.0  # a strong DC part
    coeffs = dh @ x @ dw.T
    coeffs[:, :, 0, 0] = 0
    filtered = dh.T @ coeffs @ dw
    torch.testing.assert_close(remove_dc(x), filtered, rtol=0, atol=1e-12)
    torch.testing.assert_close(alternative_view(x), F.normalize(filtered, dim=1))
    # Only the DC component went: every other coefficient is unchanged.
    kept = dh @ remove_dc(x) @ dw.T
    original = dh @ x @ dw.T
    original[:, :, 0, 0] = 0
    torch.testing.assert_close(kept, original, rtol=0, atol=1e-12)


def test_view_distance_formula():
    """sum over batch and positions of || n(S) - n(T) ||^2 over channels, divided by B."""
    s, t = torch.randn(3, 4, 5, 6), torch.randn(3, 4, 5, 6)

    def centred(x):
        return x - x.mean(dim=(2, 3), keepdim=True)

    for view, prep in (('dir', lambda x: x), ('alt', centred)):
        total = 0.0
        ps, pt = prep(s), prep(t)
        for b in range(3):
            for i in range(5):
                for j in range(6):
                    u, v = ps[b, :, i, j], pt[b, :, i, j]
                    total += float((u / u.norm() - v / v.norm()).pow(2).sum())
        assert math.isclose(float(view_distance(s, t, view)), total / 3, rel_tol=1e-5)
    torch.testing.assert_close(direct_view(s).norm(dim=1), torch.ones(3, 5, 6))
    with pytest.raises(ValueError, match='maps of equal shape'):
        view_distance(s, t[:, :, :4], 'dir')


# ----------------------------------------------------------------------------------- models
def classifier(backbone, width, head='LinearClsHead', neck=dict(type='GlobalAveragePooling')):
    return dict(
        type='ImageClassifier',
        _scope_='mmpretrain',
        backbone=backbone,
        neck=neck,
        head=dict(type=head, num_classes=CLASSES, in_channels=width),
        data_preprocessor=PRE)


def swin_teacher(img=224):
    # widths 16, 32, 64, 128; drop path on, to show the teacher runs in eval mode
    return classifier(
        dict(
            type='SwinTransformer',
            arch=dict(embed_dims=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4]),
            img_size=img,
            drop_path_rate=0.3), 128)


def vit_backbone(width, img, kind='VisionTransformer'):
    return dict(
        type=kind,
        arch=dict(embed_dims=width, num_layers=4, num_heads=2, feedforward_channels=2 * width),
        img_size=img,
        patch_size=16,
        drop_path_rate=0.3)


def vit_teacher(img=224):
    return classifier(vit_backbone(32, img), 32, 'VisionTransformerClsHead', neck=None)


def resnet_student(img=224):
    return classifier(dict(type='ResNet', depth=18, base_channels=8, stem_channels=8), 64)


def vit_student(img=224):
    return classifier(vit_backbone(16, img), 16, 'VisionTransformerClsHead', neck=None)


def mixer_student(img=224):
    return classifier(
        dict(
            type='MlpMixer',
            arch=dict(embed_dims=16, num_layers=4, tokens_mlp_dims=8, channels_mlp_dims=32),
            img_size=img,
            patch_size=16),
        16,
        neck=dict(type='GlobalAveragePooling', dim=1))  # Mixer outputs (B, C, N)


STUDENT_TAPS = {
    'resnet': {},
    'vit': dict(stage3='backbone.layers.2', stage4='backbone.ln1', grid='backbone.patch_embed'),
    'mixer':
    dict(stage3='backbone.layers.2', stage4='backbone.layers.3', grid='backbone.patch_embed'),
}
STUDENTS = dict(resnet=resnet_student, vit=vit_student, mixer=mixer_student)
TEACHERS = dict(swin=swin_teacher, vit=vit_teacher)
TEACHER_TAPS = dict(
    swin={},
    vit=dict(final='backbone.ln1', stage3='backbone.layers.2', grid='backbone.patch_embed'))


def distiller(student='resnet', teacher='swin', img=224, **loss):
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    size = img if isinstance(img, tuple) else (img, img)
    method = dict(
        type='ScaleKDLoss',
        student_taps=STUDENT_TAPS[student],
        teacher_taps=TEACHER_TAPS[teacher],
        tail_blocks=1 if teacher == 'vit' else None)
    method.update(loss)
    return Distiller(
        student=STUDENTS[student](size),
        teacher=TEACHERS[teacher](size),
        methods=[method],
        student_loss_weight=0.5,
        input_shape=(3, *size))


def samples():
    return [DataSample().set_gt_label(i % CLASSES) for i in range(B)]


# ----------------------------------------------------------------------------------- composition
def test_only_the_proxy_path_carries_autograd():
    """The distiller's teacher pass runs under no_grad and stops at its last tap; the last stage
    runs again, with autograd, once per view; gradient reaches the CAPs and the student, never the
    teacher, which stays frozen and in eval mode."""
    d = distiller()
    loss = d.methods[0]
    assert not d.teacher_needs_grad
    assert sorted(loss.projectors) == ['s3_alt', 's3_dir', 's4_alt', 's4_dir']
    calls = {'stage4': [], 'head': []}
    hooks = [
        d.teacher.backbone.stages[3].register_forward_hook(
            lambda *a: calls['stage4'].append(torch.is_grad_enabled())),
        d.teacher.head.register_forward_hook(
            lambda *a: calls['head'].append(torch.is_grad_enabled())),
    ]
    d.train()
    assert not d.teacher.training and not any(m.training for m in d.teacher.modules())
    losses = d.loss(torch.randn(B, 3, 224, 224), samples())
    for h in hooks:
        h.remove()
    # The teacher's own pass (no grad), then the proxy path for each view (grad).
    assert calls == {'stage4': [False, True, True], 'head': [False]}
    names = {
        'loss_scalekd_s3_dir', 'loss_scalekd_s3_alt', 'loss_scalekd_s4_dir', 'loss_scalekd_s4_alt',
        'loss_scalekd_kd'
    }
    assert names <= set(losses) and all(torch.isfinite(losses[k]) for k in names)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    for name, p in loss.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert d.student.backbone.layer3[0].conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in d.teacher.parameters())

    # Without the KD term the teacher stops at its final norm: the head never runs.
    d = distiller(kd_weight=0)
    assert 'logits' not in d.methods[0].teacher_taps
    ran = []
    h = d.teacher.head.register_forward_hook(lambda *a: ran.append(1))
    losses = d.loss(torch.randn(B, 3, 224, 224), samples())
    h.remove()
    assert not ran and 'loss_scalekd_kd' not in losses


@pytest.mark.parametrize('teacher', ['swin', 'vit'])
@pytest.mark.parametrize('size', [(224, 224), OTHER], ids=['224', '240x304'])
def test_teacher_tokens_through_the_proxy_meet_the_target_exactly(teacher, size):
    """If the stage-3 CAPs gave the teacher's own stage-3 tokens, the proxy output would be the
    teacher's final feature: the stage-3 terms vanish (the target and the proxy path agree)."""
    d = distiller(teacher=teacher).eval()
    loss = d.methods[0]
    x = torch.randn(B, 3, *size)
    with torch.no_grad():
        t_feats = d.teacher_features(x)
    with d.student_taps.record() as s_store:
        d.student(x, mode='tensor')
    t_sel, s_sel = _select(loss.teacher_taps, t_feats), _select(loss.student_taps, s_store)
    stage3 = t_sel['stage3']
    own = stage3[0] if isinstance(stage3, tuple) else stage3[:, 1:]  # ViT: without cls
    for view in ('dir', 'alt'):
        loss.projectors[f's3_{view}'].forward = lambda *a, **k: own
    out = loss(s_sel, t_sel)
    assert float(out['loss_scalekd_s3_dir']) < 1e-9 and float(out['loss_scalekd_s3_alt']) < 1e-9
    assert float(out['loss_scalekd_s4_dir']) > 1e-3


def test_no_teacher_weight_in_state_dict_optimizer_export_and_ema(tmp_path):
    d = distiller()
    teacher_ptrs = {p.data_ptr() for p in d.teacher.state_dict().values()}
    teacher_params = {id(p) for p in d.teacher.parameters()}
    state = d.state_dict()
    assert not any(k.startswith('teacher') or '_tail' in k for k in state)
    assert not teacher_ptrs & {v.data_ptr() for v in state.values() if torch.is_tensor(v)}
    cap_keys = [k for k in state if k.startswith('methods.0.projectors.')]
    assert cap_keys and all(
        k.startswith(('student.', 'methods.0.projectors.', '_extra'))
        for k in state), sorted(state)[:5]
    wrapper = build_optim_wrapper(d, dict(optimizer=dict(type='SGD', lr=0.1)))
    in_optim = [id(p) for g in wrapper.optimizer.param_groups for p in g['params']]
    assert not teacher_params & set(in_optim)
    assert set(in_optim) == {id(p) for p in d.parameters()}
    ckpt = tmp_path / 'distill.pth'
    torch.save(dict(state_dict=state, meta={}), ckpt)
    out = export_student(str(ckpt), str(tmp_path / 'student.pth'))
    assert set(out['state_dict']) == set(d.student.state_dict())
    # EMA deep-copies the model: the teacher is shared, also the one the loss's proxy path uses.
    ema = ExponentialMovingAverage(d)
    assert ema.module.teacher is d.teacher
    assert ema.module.methods[0].tail.teacher is d.teacher
    assert ema.module.methods[0].projectors is not d.methods[0].projectors
    alone = copy.deepcopy(d.methods[0])
    assert alone.tail.teacher is d.teacher


@pytest.mark.parametrize('teacher', ['swin', 'vit'])
@pytest.mark.parametrize('student', ['resnet', 'vit', 'mixer'])
def test_cap_shapes(student, teacher):
    """Stage-3 CAPs give (B, teacher stage-3 tokens, its width), last-stage CAPs (B, final tokens,
    final width), at 224 px and at 240 x 304 (Mixers take one input size: a distiller built at
    that size; the others are built at 224 and run at both)."""
    swin = teacher == 'swin'
    widths = (64, 128) if swin else (32, 32)
    runs = [(distiller(student, teacher), (224, 224))]
    runs.append(
        (distiller(student, teacher, img=OTHER) if student == 'mixer' else runs[0][0], OTHER))
    for d, (h, w) in runs:
        caps = d.methods[0].projectors
        seen = {}
        hooks = [
            cap.register_forward_hook(lambda m, a, o, n=name: seen.__setitem__(n, tuple(o.shape)))
            for name, cap in caps.items()
        ]
        losses = d.loss(torch.randn(B, 3, h, w), samples())
        for hook in hooks:
            hook.remove()
        n3 = (h // 16) * (w // 16)
        n4 = math.ceil(h / 32) * math.ceil(w / 32) if swin else n3
        assert seen == {
            's3_dir': (B, n3, widths[0]),
            's3_alt': (B, n3, widths[0]),
            's4_dir': (B, n4, widths[1]),
            's4_alt': (B, n4, widths[1]),
        }, (student, teacher, h, w)
        assert all(torch.isfinite(v) for k, v in losses.items() if 'scalekd' in k)


def test_weights_options_and_errors():
    d = distiller(
        alt_weight=(0.06, 0), softmax_scale=(2.0, 3.0), num_heads=(4, 8), dir_weight=(0.1, 0.2))
    loss = d.methods[0]
    assert sorted(loss.projectors) == ['s3_alt', 's3_dir', 's4_dir']
    assert loss.projectors['s3_dir'].softmax_scale == 2.0
    assert loss.projectors['s4_dir'].softmax_scale == 3.0
    assert (loss.projectors['s3_dir'].num_heads, loss.projectors['s4_dir'].num_heads) == (4, 8)
    losses = d.loss(torch.randn(B, 3, 224, 224), samples())
    assert 'loss_scalekd_s4_alt' not in losses and 'loss_scalekd_s3_alt' in losses
    # Defaults: Swin-L's rule for the heads and the reference's view weights and scale.
    default = distiller().methods[0]
    assert (default.dir_weights, default.alt_weights) == ((0.08, 0.08), (0.06, 0.06))
    assert default.projectors['s4_dir'].softmax_scale == 5.0
    assert default.projectors['s3_dir'].queries is not None
    assert default.projectors['s4_dir'].queries is None

    with pytest.raises(TypeError, match='Supported: mmpretrain SwinTransformer'):
        Distiller(
            student=resnet_student(),
            teacher=resnet_student(),
            methods=[
                dict(
                    type='ScaleKDLoss',
                    teacher_taps=dict(final='backbone.layer4', stage3='backbone.layer3'))
            ])
    with pytest.raises(ValueError, match=r'needs tail_blocks'):
        distiller(teacher='vit', tail_blocks=None)
    with pytest.raises(ValueError, match=r"teacher_taps\['stage3'\]='backbone.layers.1'"):
        distiller(teacher='vit', tail_blocks=2)
    with pytest.raises(ValueError, match='need their patch grid'):
        distiller(
            student='vit', student_taps=dict(stage3='backbone.layers.2', stage4='backbone.ln1'))
    with pytest.raises(ValueError, match='or \\(stage 3, last stage\\)'):
        ScaleKDLoss(softmax_scale=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match='>= 0'):
        ScaleKDLoss(dir_weight=-1)
    with pytest.raises(ValueError, match='use KDLoss'):
        ScaleKDLoss(dir_weight=0, alt_weight=0)
    with pytest.raises(ValueError, match='come from the dry-run shapes'):
        ScaleKDLoss(projector=dict(in_dims=3))


def test_trains_a_few_steps():
    """train_step on uint8 images through the student's preprocessor: finite terms, the CAPs and
    the student learn, the teacher does not change."""
    d = distiller(projector=dict(stem_norm='LN'))
    caps = d.methods[0].projectors
    assert type(caps['s3_dir'].stem[1]).__name__ == 'LayerNorm2d'
    wrapper = build_optim_wrapper(d, dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)))
    teacher_before = copy.deepcopy(d.teacher.state_dict())
    caps_before = copy.deepcopy(caps.state_dict())
    student_before = copy.deepcopy(d.student.state_dict())
    g = torch.Generator().manual_seed(0)
    data = dict(
        inputs=[
            torch.randint(0, 256, (3, 224, 224), dtype=torch.uint8, generator=g) for _ in range(B)
        ],
        data_samples=samples())
    d.train()
    for _ in range(3):
        log = d.train_step(data, wrapper)
        assert all(math.isfinite(float(v)) for v in log.values())
    assert {'loss_scalekd_s3_dir', 'loss_scalekd_s4_alt', 'loss_scalekd_kd'} <= set(log)
    after = caps.state_dict()
    changed = [k for k in caps_before if not torch.equal(caps_before[k], after[k])]
    assert len(changed) >= len([k for k in caps_before if 'running' not in k]) - 1, changed
    assert not torch.equal(student_before['backbone.layer4.0.conv1.weight'],
                           d.student.state_dict()['backbone.layer4.0.conv1.weight'])
    t_after = d.teacher.state_dict()
    assert all(torch.equal(teacher_before[k], t_after[k]) for k in teacher_before)


def test_dual_view_mimic_loss_alone():
    """DualViewMimicLoss in a distiller (Swin teacher's final norm, grid from its last stage): two
    CAPs with learnable queries on the teacher grid, the two view distances weighted."""
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    d = Distiller(
        student=resnet_student(),
        teacher=swin_teacher(),
        methods=[dict(type='DualViewMimicLoss')],
        input_shape=(3, 224, 224))
    loss = d.methods[0]
    assert sorted(loss.projectors) == ['alt', 'dir']
    assert all(
        isinstance(p, CrossAttentionProjector) and p.query_grid == (7, 7)
        for p in loss.projectors.values())
    d.eval()
    x = torch.randn(B, 3, 224, 224)
    losses = d.loss(x, samples())
    with torch.no_grad():
        target = d.teacher.backbone(x)[0]  # norm3 output as a map, from the backbone itself
        s4 = d.student.backbone(x)[-1]  # layer4
    for view, w in (('dir', 0.08), ('alt', 0.06)):
        pred = loss.projectors[view](s4).transpose(1, 2).reshape(target.shape)
        expected = w * view_distance(pred, target, view)
        torch.testing.assert_close(losses[f'loss_dfm_{view}'], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match='one number'):
        DualViewMimicLoss(dir_weight=(0.1, 0.2))
