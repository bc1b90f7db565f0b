"""ViTKD, FitNet and MGD: formulas, masking, extra tokens, grids (the configs are trained by
tests/test_configs.py; token helpers, projector, generator: tests/test_utils, test_projectors,
test_generators)."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmpretrain.structures import DataSample

import mmkd_ext  # noqa: F401
from mmkd_ext.distillers import Distiller
from mmkd_ext.losses import FitNetLoss, MGDLoss, ViTKDLoss
from mmkd_ext.losses.vitkd import exact_random_mask
from mmkd_ext.utils.tokens import map_to_tokens, tokens_to_map

B, H, W, DS, DT = 2, 3, 4, 6, 8  # a non-square 3x4 grid of N = 12 patch tokens
N = H * W


class _Backbone(torch.nn.Module):

    def __init__(self, extra):
        super().__init__()
        self.num_extra_tokens = extra


class _Model(torch.nn.Module):

    def __init__(self, extra=1):
        super().__init__()
        self.backbone = _Backbone(extra)


def make_vitkd(s_extra=1, t_extra=1, **kw):
    torch.manual_seed(0)
    loss = ViTKDLoss(**kw)
    shallow_s, shallow_t = [(s_extra + N, DS)] * 2, [(t_extra + N, DT)] * 2
    loss.setup(
        dict(shallow=shallow_s, deep=(s_extra + N, DS), grid=[(N, DS), ['int', 'int']]),
        dict(shallow=shallow_t, deep=(t_extra + N, DT)), _Model(s_extra), _Model(t_extra))
    with torch.no_grad():  # a non-zero mask token, so that the test sees where it goes
        if hasattr(loss, 'mask_token'):
            loss.mask_token.normal_()
    return loss


def feats(s_extra=1, t_extra=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    s = dict(
        shallow=[torch.randn(B, s_extra + N, DS, generator=g) for _ in range(2)],
        deep=torch.randn(B, s_extra + N, DS, generator=g),
        grid=(torch.zeros(B, N, DS), (H, W)))
    t = dict(
        shallow=[torch.randn(B, t_extra + N, DT, generator=g) for _ in range(2)],
        deep=torch.randn(B, t_extra + N, DT, generator=g))
    return s, t


def fixed_mask():
    m = torch.zeros(B, N, dtype=torch.bool)
    m[0, [0, 3, 5, 7, 8, 11]] = True
    m[1, [1, 2, 4, 6, 9, 10]] = True
    return m


def by_hand_generation(loss, s_deep, t_deep, mask, extra=1):
    """Eqs. 2-5 by explicit loops: Linear, mask token, Conv3x3-ReLU-Conv3x3, masked squared sum."""
    lin = loss.gen_projector.fc
    conv1, conv2 = loss.generator.generation[0], loss.generator.generation[2]
    total = 0.0
    for b in range(B):
        x = s_deep[b, extra:] @ lin.weight.T + lin.bias  # (N, DT)
        rows = [loss.mask_token[0, 0] if mask[b, i] else x[i] for i in range(N)]
        grid = torch.stack(rows).T.reshape(1, DT, H, W)  # token i is at (i // W, i % W)
        y = F.conv2d(
            F.relu(F.conv2d(grid, conv1.weight, conv1.bias, padding=1)),
            conv2.weight,
            conv2.bias,
            padding=1)
        y = y.reshape(DT, N).T
        for i in range(N):
            if mask[b, i]:
                total = total + ((t_deep[b, extra + i] - y[i])**2).sum()
    return total


def by_hand_mimic(loss, s_shallow, t_shallow, extra=1):
    total = 0.0
    for proj, s, t in zip(loss.mimic_projectors, s_shallow, t_shallow):
        for b in range(B):
            pred = s[b, extra:] @ proj.fc.weight.T + proj.fc.bias
            total = total + ((t[b, extra:] - pred)**2).sum()
    return total


# ------------------------------------------------------------------------------- formulas
def test_vitkd_sum_reduction_matches_the_reference_formula():
    loss = make_vitkd(alpha=2e-2, beta=3e-2, mask_ratio=0.5, loss_weight=0.5)
    mask = fixed_mask()
    loss.random_mask = lambda b, n, device=None: mask
    s, t = feats()
    out = loss(s, t)
    assert set(out) == {'loss_vitkd_mimic', 'loss_vitkd_gen'}
    mimic = 0.5 * 2e-2 * by_hand_mimic(loss, s['shallow'], t['shallow']) / B
    gen = 0.5 * 3e-2 * by_hand_generation(loss, s['deep'], t['deep'], mask) / B / 0.5
    assert out['loss_vitkd_mimic'].item() == pytest.approx(mimic.item(), rel=1e-5)
    assert out['loss_vitkd_gen'].item() == pytest.approx(gen.item(), rel=1e-5)


def test_vitkd_mean_reduction_and_its_mapping_to_sum():
    loss = make_vitkd(alpha=1.0, beta=1.0, reduction='mean')
    mask = fixed_mask()
    loss.random_mask = lambda b, n, device=None: mask
    s, t = feats()
    out = loss(s, t)
    masked = int(mask.sum())
    mimic = by_hand_mimic(loss, s['shallow'], t['shallow']) / (2 * B * N * DT)
    gen = by_hand_generation(loss, s['deep'], t['deep'], mask) / (masked * DT)
    assert out['loss_vitkd_mimic'].item() == pytest.approx(mimic.item(), rel=1e-5)
    assert out['loss_vitkd_gen'].item() == pytest.approx(gen.item(), rel=1e-5)
    # The mapping of docs/methods/vitkd.md: alpha_mean = alpha_sum * L * N * D_t,
    # beta_mean = beta_sum * M * D_t / ratio (M masked tokens per sample).
    summed = make_vitkd(alpha=3e-5, beta=3e-6, reduction='sum')
    summed.load_state_dict(loss.state_dict())
    summed.random_mask = loss.random_mask
    ref = summed(s, t)
    m = masked // B
    meaned = make_vitkd(alpha=3e-5 * 2 * N * DT, beta=3e-6 * m * DT / 0.5, reduction='mean')
    meaned.load_state_dict(loss.state_dict())
    meaned.random_mask = loss.random_mask
    got = meaned(s, t)
    for k in ref:
        assert got[k].item() == pytest.approx(ref[k].item(), rel=1e-5)


def test_vitkd_correlation_mimicking_has_no_projector():
    loss = make_vitkd(alpha=1.0, beta=0.0, mimic='correlation')
    assert not any(p.requires_grad for p in loss.parameters())
    s, t = feats()
    expected = 0.0
    for fs, ft in zip(s['shallow'], t['shallow']):
        for b in range(B):
            cs = fs[b, 1:] @ fs[b, 1:].T / math.sqrt(DS)
            ct = ft[b, 1:] @ ft[b, 1:].T / math.sqrt(DT)
            expected += ((cs - ct)**2).sum().item()
    out = loss(s, t)
    assert list(out) == ['loss_vitkd_mimic']
    assert out['loss_vitkd_mimic'].item() == pytest.approx(expected / B, rel=1e-5)


def test_vitkd_zero_weight_drops_the_term_and_its_taps():
    mimic_only = ViTKDLoss(beta=0.0)
    assert set(mimic_only.teacher_taps) == {'shallow'}
    assert set(mimic_only.student_taps) == {'shallow'}
    gen_only = ViTKDLoss(alpha=0.0)
    assert set(gen_only.teacher_taps) == {'deep'}
    assert set(gen_only.student_taps) == {'deep', 'grid'}


def test_vitkd_ratio_zero_uses_every_token():
    loss = make_vitkd(alpha=0.0, beta=1.0, mask_ratio=0.0)
    s, t = feats()
    out = loss(s, t)['loss_vitkd_gen']
    # No token is masked: every token counts, the mask token is never used, no division by 0.
    lin = loss.gen_projector.fc
    x = s['deep'][:, 1:] @ lin.weight.T + lin.bias
    y = map_to_tokens(loss.generator(tokens_to_map(x, (H, W))))
    expected = ((y - t['deep'][:, 1:])**2).sum() / B
    assert torch.isfinite(out) and out.item() == pytest.approx(expected.item(), rel=1e-5)


# ------------------------------------------------------------------------------- masking
@pytest.mark.parametrize('n,ratio', [(196, 0.5), (196, 0.3), (196, 0.7), (196, 0.9), (12, 0.5),
                                     (49, 0.15), (196, 0.0)])
def test_mask_keeps_exactly_int_n_times_one_minus_ratio(n, ratio):
    mask = exact_random_mask(7, n, ratio)
    kept = (~mask).sum(dim=1)
    assert torch.all(kept == int(n * (1 - ratio)))
    # Different samples get different masks.
    if 0 < ratio < 1 and n > 20:
        assert not torch.equal(mask[0], mask[1])


def test_only_masked_tokens_contribute_and_mask_is_shared():
    loss = make_vitkd(alpha=0.0, beta=1.0)
    mask = fixed_mask()
    loss.random_mask = lambda b, n, device=None: mask
    s, t = feats()
    base = loss(s, t)['loss_vitkd_gen']
    t2 = copy.deepcopy(t)
    t2['deep'][:, 1:][~mask] += 100.0  # teacher changes at visible tokens: no effect
    assert loss(s, t2)['loss_vitkd_gen'].item() == pytest.approx(base.item(), rel=1e-6)
    t3 = copy.deepcopy(t)
    t3['deep'][:, 1:][mask] += 1.0
    assert loss(s, t3)['loss_vitkd_gen'].item() != pytest.approx(base.item(), rel=1e-3)
    # The student's content at masked tokens is replaced by the mask token: no effect either.
    s2 = copy.deepcopy(s)
    s2['deep'][:, 1:][mask] += 100.0
    assert loss(s2, t)['loss_vitkd_gen'].item() == pytest.approx(base.item(), rel=1e-6)


def test_mask_is_drawn_once_per_forward():
    loss = make_vitkd(alpha=0.0, beta=1.0)
    calls = []
    original = loss.random_mask
    loss.random_mask = lambda *a, **k: calls.append(1) or original(*a, **k)
    loss(*feats())
    assert len(calls) == 1


def test_cls_and_distillation_tokens_never_enter_the_loss():
    for s_extra, t_extra in ((1, 1), (2, 1)):
        loss = make_vitkd(s_extra=s_extra, t_extra=t_extra, alpha=1.0, beta=1.0)
        mask = fixed_mask()
        loss.random_mask = lambda b, n, device=None: mask
        s, t = feats(s_extra, t_extra)
        base = loss(s, t)
        for f in s['shallow'] + [s['deep']]:
            f[:, :s_extra] += 50.0
        for f in t['shallow'] + [t['deep']]:
            f[:, :t_extra] -= 50.0
        moved = loss(s, t)
        for k in base:
            assert moved[k].item() == pytest.approx(base[k].item(), rel=1e-6)


# ------------------------------------------------------------------------------- FitNet, MGD
def test_fitnet_matches_formula():
    loss = FitNetLoss(
        student_taps=dict(feats=['a', 'b']),
        teacher_taps=dict(feats=['a', 'b']),
        reduction='sum',
        loss_weight=0.1)
    loss.setup(
        dict(feats=[(N + 1, DS), (DS, 3, 4)]), dict(feats=[(N + 1, DT), (DT, 3, 4)]), _Model(),
        _Model())
    s = [torch.randn(B, N + 1, DS), torch.randn(B, DS, 3, 4)]
    t = [torch.randn(B, N + 1, DT), torch.randn(B, DT, 3, 4)]
    p0, p1 = loss.projectors[0].fc, loss.projectors[1].fc
    e0 = ((s[0][:, 1:] @ p0.weight.T + p0.bias - t[0][:, 1:])**2).sum() / B
    e1 = ((F.conv2d(s[1], p1.weight[:, :, None, None], p1.bias) - t[1])**2).sum() / B
    out = loss(dict(feats=s), dict(feats=t))
    assert list(out) == ['loss_fitnet']
    assert out['loss_fitnet'].item() == pytest.approx(0.1 * (e0 + e1).item(), rel=1e-5)
    loss.reduction = 'mean'
    e0m = ((s[0][:, 1:] @ p0.weight.T + p0.bias - t[0][:, 1:])**2).mean()
    e1m = ((F.conv2d(s[1], p1.weight[:, :, None, None], p1.bias) - t[1])**2).mean()
    out = loss(dict(feats=s), dict(feats=t))
    assert out['loss_fitnet'].item() == pytest.approx(0.1 * (e0m + e1m).item(), rel=1e-5)


def by_hand_mgd(loss, s, t, keep, alpha):
    """MGD's reference formula by hand: 1x1 align, multiply by the 0/1 mask, Conv3x3-ReLU-Conv3x3,
    squared error summed over the whole map / batch."""
    a = loss.align.fc
    masked = F.conv2d(s, a.weight[:, :, None, None], a.bias) * keep
    g1, g2 = loss.generation.generation[0], loss.generation.generation[2]
    pred = F.conv2d(
        F.relu(F.conv2d(masked, g1.weight, g1.bias, padding=1)), g2.weight, g2.bias, padding=1)
    return alpha * ((pred - t)**2).sum() / s.shape[0]  # the whole map, masked or not


def test_mgd_matches_formula_on_maps_and_tokens():
    loss = MGDLoss(alpha_mgd=0.3, lambda_mgd=0.5)
    assert 'grid' not in loss.student_taps and loss.mask == 'channel'
    loss.setup(dict(feat=(DS, H, W)), dict(feat=(DT, H, W)), torch.nn.Module(), torch.nn.Module())
    # A fixed channel mask: whole (sample, teacher channel) planes are zeroed.
    keep = torch.ones(B, DT, 1, 1)
    keep[0, [1, 4, 5]] = 0
    keep[1, [0, 2, 3, 7]] = 0
    loss.random_mask = lambda shape, device=None: keep
    s, t = torch.randn(B, DS, H, W), torch.randn(B, DT, H, W)
    expected = by_hand_mgd(loss, s, t, keep, 0.3)
    out = loss(dict(feat=s), dict(feat=t))
    assert out['loss_mgd'].item() == pytest.approx(expected.item(), rel=1e-5)
    # A different mask gives a different number (the mask is really applied).
    assert by_hand_mgd(loss, s, t, torch.ones_like(keep), 0.3).item() != pytest.approx(
        expected.item(), rel=1e-3)
    # Tokens (cls first) on the 3x4 grid give the same number as the equivalent maps.
    tok = MGDLoss(alpha_mgd=0.3, student_taps=dict(feat='x', grid='g'), teacher_taps=dict(feat='x'))
    tok.setup(dict(feat=(N + 1, DS), grid=None), dict(feat=(N + 1, DT)), _Model(), _Model())
    tok.load_state_dict(loss.state_dict())
    tok.random_mask = loss.random_mask
    s_tok = torch.cat([torch.randn(B, 1, DS), map_to_tokens(s)], 1)
    t_tok = torch.cat([torch.randn(B, 1, DT), map_to_tokens(t)], 1)
    out_tok = tok(dict(feat=s_tok, grid=(s_tok, (H, W))), dict(feat=t_tok))
    assert out_tok['loss_mgd'].item() == pytest.approx(expected.item(), rel=1e-5)
    # The spatial layout (detection) with a fixed (B, 1, h, w) mask, same formula.
    spatial = MGDLoss(alpha_mgd=0.3, lambda_mgd=0.5, mask='spatial')
    spatial.setup(
        dict(feat=(DS, H, W)), dict(feat=(DT, H, W)), torch.nn.Module(), torch.nn.Module())
    spatial.load_state_dict(loss.state_dict())
    keep_sp = (~fixed_mask()).float().reshape(B, 1, H, W)
    spatial.random_mask = lambda shape, device=None: keep_sp
    out_sp = spatial(dict(feat=s), dict(feat=t))
    assert out_sp['loss_mgd'].item() == pytest.approx(
        by_hand_mgd(spatial, s, t, keep_sp, 0.3).item(), rel=1e-5)
    with pytest.raises(ValueError, match='channel'):
        MGDLoss(mask='token')


@pytest.mark.parametrize('mask', ['channel', 'spatial'])
def test_mgd_mask_semantics_match_the_reference_draws(mask):
    """The reference draws u ~ U[0, 1): classification rand(B, C, 1, 1), zero where u < lambda;
    detection rand(B, 1, h, w), zero where u > 1 - lambda. Masked entries are zeros."""
    lam, shape = 0.3, (4, DT, H, W)
    loss = MGDLoss(lambda_mgd=lam, mask=mask)
    torch.manual_seed(7)
    if mask == 'channel':
        u = torch.rand(4, DT, 1, 1)
        expected = torch.where(u < lam, 0.0, 1.0)
    else:
        u = torch.rand(4, 1, H, W)
        expected = torch.where(u > 1 - lam, 0.0, 1.0)
    torch.manual_seed(7)
    keep = loss.random_mask(shape)
    assert torch.equal(keep, expected)
    assert 0 < keep.sum() < keep.numel()  # both cases occur in this draw
    # What reaches the generator: the aligned map with masked entries set to zero, the rest as is.
    loss.setup(dict(feat=(DS, H, W)), dict(feat=(DT, H, W)), torch.nn.Module(), torch.nn.Module())
    seen = []
    loss.generation.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    s, t = torch.randn(4, DS, H, W), torch.randn(4, DT, H, W)
    torch.manual_seed(7)  # the same draw as above
    loss(dict(feat=s), dict(feat=t))
    a = loss.align.fc
    aligned = F.conv2d(s, a.weight[:, :, None, None], a.bias)
    full = expected.expand(4, DT, H, W).bool()
    assert torch.all(seen[0][~full] == 0)
    assert torch.allclose(seen[0][full], aligned[full], atol=1e-6)


@pytest.mark.parametrize('mask,lam', [('channel', 0.15), ('spatial', 0.65)])
def test_mgd_default_mask_ratio(mask, lam):
    loss = MGDLoss(lambda_mgd=lam, mask=mask)
    keep = loss.random_mask((64, 96, 14, 14))
    assert keep.shape == ((64, 96, 1, 1) if mask == 'channel' else (64, 1, 14, 14))
    assert abs(1 - keep.mean().item() - lam) < 0.02
    assert MGDLoss().mask == 'channel' and MGDLoss().lambda_mgd == 0.15  # classification defaults


# ------------------------------------------------------------------------------- real models
def vit(width, depth=2, img=(16, 24), patch=4, distilled=False, heads=2):
    return dict(
        type='ImageClassifier',
        _scope_='mmpretrain',
        backbone=dict(
            type='DistilledVisionTransformer' if distilled else 'VisionTransformer',
            arch=dict(
                embed_dims=width, num_layers=depth, num_heads=heads,
                feedforward_channels=2 * width),
            img_size=img,
            patch_size=patch,
            in_channels=3),
        neck=None,
        head=dict(
            type='DeiTClsHead' if distilled else 'VisionTransformerClsHead',
            num_classes=5,
            in_channels=width))


def random_batch(shape, n=2, classes=5):
    inputs = [torch.randint(0, 256, shape, dtype=torch.uint8) for _ in range(n)]
    samples = [DataSample().set_gt_label(i % classes) for i in range(n)]
    return dict(inputs=inputs, data_samples=samples)


def one_step(model, data):
    model.train()
    optim = OptimWrapper(
        torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3))
    log = model.train_step(data, optim)
    assert all(math.isfinite(float(v)) for v in log.values()), log
    return log


def test_distilled_student_with_two_extra_tokens_and_non_square_inputs():
    init_default_scope('mmpretrain')
    d = Distiller(
        student=vit(16, distilled=True),
        teacher=vit(24),
        input_shape=(3, 16, 24),
        methods=[
            dict(type='ViTKDLoss', reduction='mean', alpha=1.0, beta=1.0),
            dict(type='FitNetLoss'),
            dict(
                type='MGDLoss',
                student_taps=dict(feat='backbone.ln1', grid='backbone.patch_embed'),
                teacher_taps=dict(feat='backbone.ln1'))
        ])
    m = d.methods[0]
    assert (m.student_extra, m.teacher_extra) == (2, 1)
    assert m.mimic_projectors[0].fc.weight.shape == (24, 16)
    mask_shapes = []
    original = m.random_mask
    m.random_mask = lambda b, n, device=None: mask_shapes.append((b, n)) or original(b, n, device)
    data = random_batch((3, 16, 24))
    data['inputs'] = torch.stack(data['inputs']).float()
    processed = d.data_preprocessor(data, True)
    losses = d(**processed, mode='loss')
    assert mask_shapes == [(2, 4 * 6)]  # the 4x6 grid of the 16x24 input, not sqrt(N)
    for k in ('loss_vitkd_mimic', 'loss_vitkd_gen', 'loss_fitnet', 'loss_mgd'):
        assert torch.isfinite(losses[k]) and losses[k] > 0
    # A larger input than the dry run's works too: the grid is read per step.
    bigger = torch.randn(2, 3, 24, 32)
    losses = d(bigger, processed['data_samples'], mode='loss')
    assert mask_shapes[-1] == (2, 6 * 8)
