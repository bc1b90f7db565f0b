"""SpectralKD: the loss, the configs, and the CaiT backbone (the analysis tool:
tests/test_analysis/test_spectral_analysis.py)."""
import glob
import importlib.util
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmkd_ext  # noqa: F401
from mmkd_ext.losses import SpectralKDLoss
from conftest import ROOT

SPECTRAL_CFGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'spectralkd', '*.py')))
DEMO_CFG = osp.join(ROOT, 'configs', 'demo', 'r18w32_spectralkd_r18w4_1xb64-10e_digits.py')


# ----------------------------------------------------------------------------------- the loss
class _Fake(nn.Module):
    """Stands for a model whose backbone has ``num_extra_tokens`` (and a patch_resolution)."""

    def __init__(self, extra=0, grid=None):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.num_extra_tokens = extra
        if grid:
            self.backbone.patch_resolution = grid


def _shape(v):
    if torch.is_tensor(v):
        return tuple(v.shape[1:])
    return [tuple(v[0].shape[1:]), ['int', 'int']]


def make_loss(s_feats, t_feats, s_model=None, t_model=None, s_grid=None, t_grid=None, **kw):
    """Build and set up a loss on synthetic tap values (lists of values, one per pair)."""
    n = len(s_feats)
    s_taps = dict(feats=[f's{i}' for i in range(n)])
    t_taps = dict(feats=[f't{i}' for i in range(n)])
    if s_grid is not None:
        s_taps['grid'] = 's_grid'
    if t_grid is not None:
        t_taps['grid'] = 't_grid'
    loss = SpectralKDLoss(student_taps=s_taps, teacher_taps=t_taps, **kw)
    # A tap that is off is absent from what the distiller passes.
    sf = dict(feats=s_feats, **({} if s_grid is None else dict(grid=s_grid)))
    tf = dict(feats=t_feats, **({} if t_grid is None else dict(grid=t_grid)))
    s_shapes = dict(feats=[_shape(v) for v in s_feats], **({} if s_grid is None else dict(grid=[])))
    t_shapes = dict(feats=[_shape(v) for v in t_feats], **({} if t_grid is None else dict(grid=[])))
    loss.setup(s_shapes, t_shapes, s_model or _Fake(), t_model or _Fake())
    return loss, sf, tf


def direct(fs, ft):
    """The formula written out: group-mean the teacher's channels, ortho rfft2, MSE of re/im."""
    cs, ct = fs.shape[1], ft.shape[1]
    if ct > cs:
        ft = torch.stack([ft[:, i * (ct // cs):(i + 1) * (ct // cs)].mean(1) for i in range(cs)], 1)
    s, t = torch.fft.rfft2(fs, norm='ortho'), torch.fft.rfft2(ft, norm='ortho')
    diff = torch.stack([s.real - t.real, s.imag - t.imag])
    return (diff**2).mean()


def test_loss_matches_direct_recomputation():
    torch.manual_seed(0)
    B = 3
    # pair 0: CNN maps, teacher twice as wide; pair 1: ViT tokens (1 cls token) on a 3x5 grid with
    # the teacher tokens (no extra token, CaiT-like) on the same grid; pair 2: Swin-like (tokens, hw).
    s_maps = [torch.randn(B, 4, 6, 7), torch.randn(B, 8, 3, 5), torch.randn(B, 6, 4, 4)]
    t_maps = [torch.randn(B, 8, 6, 7), torch.randn(B, 16, 3, 5), torch.randn(B, 12, 4, 4)]
    for m in s_maps:
        m.requires_grad_(True)
    tok = lambda m: m.flatten(2).transpose(1, 2)  # noqa: E731
    cls = torch.randn(B, 1, 8)
    s_vals = [s_maps[0], torch.cat([cls, tok(s_maps[1])], 1), (tok(s_maps[2]), (4, 4))]
    t_vals = [t_maps[0], tok(t_maps[1]), (tok(t_maps[2]), (4, 4))]
    grid_val = (torch.zeros(B, 15, 8), (3, 5))
    loss, sf, tf = make_loss(s_vals, t_vals, _Fake(extra=1), _Fake(extra=0), s_grid=grid_val,
                             t_grid=grid_val, loss_weight=0.2)
    out = loss(sf, tf)
    assert list(out) == ['loss_spectralkd']
    expected = 0.2 * torch.stack([direct(s, t) for s, t in zip(s_maps, t_maps)]).mean()
    torch.testing.assert_close(out['loss_spectralkd'], expected)
    out['loss_spectralkd'].backward()
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in s_maps)


def test_tokens_without_grid_tap_use_patch_resolution():
    fs, ft = torch.randn(2, 1 + 6, 4), torch.randn(2, 1 + 6, 4)
    loss, sf, tf = make_loss([fs], [ft], _Fake(1, (2, 3)), _Fake(1, (2, 3)))
    to_map = lambda x: x[:, 1:].transpose(1, 2).reshape(2, 4, 2, 3)  # noqa: E731
    torch.testing.assert_close(loss(sf, tf)['loss_spectralkd'], direct(to_map(fs), to_map(ft)))


def test_block_tokens_after_patch_merging_use_the_reduced_grid():
    # Swin-like: patch grid 7x6 from the grid tap; a block after one merging has 4x3 = 12 tokens.
    fs, ft = torch.randn(2, 12, 4), torch.randn(2, 12, 8)
    grid_val = (torch.zeros(2, 42, 4), (7, 6))
    loss, sf, tf = make_loss([fs], [ft], s_grid=grid_val, t_grid=grid_val)
    to_map = lambda x: x.transpose(1, 2).reshape(2, -1, 4, 3)  # noqa: E731
    torch.testing.assert_close(loss(sf, tf)['loss_spectralkd'], direct(to_map(fs), to_map(ft)))


@pytest.mark.parametrize('shape', [(2, 3, 5, 7), (3, 4, 6, 8), (1, 8, 16, 31), (2, 5, 9, 64)])
def test_half_spatial_mse_property(shape):
    """Unitary FFT (Parseval): the rfft2 half spectrum holds every column once except the
    zero-frequency column (and the Nyquist one for even W), whose conjugate twins it lacks. So
    sum over the half spectrum of |S - T|^2 = (spatial sum of squares + those columns) / 2, and the
    loss is about half the spatial MSE with the zero-frequency column counted twice."""
    torch.manual_seed(sum(shape))
    B, C, H, W = shape
    fs, ft = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    loss, sf, tf = make_loss([fs], [ft])
    value = loss(sf, tf)['loss_spectralkd'].double()
    d = torch.fft.fft2(fs - ft, norm='ortho')                      # full spectrum
    edge = d[..., 0].abs().pow(2).sum()                            # zero-frequency column
    if W % 2 == 0:
        edge = edge + d[..., W // 2].abs().pow(2).sum()            # Nyquist column
    spatial = (fs - ft).pow(2).sum()
    n_half = 2 * B * C * H * (W // 2 + 1)                          # stacked real + imaginary
    # exact identity (float32 FFT inside the loss)
    torch.testing.assert_close(value * n_half, (spatial + edge) / 2, rtol=1e-5, atol=1e-6)
    # near-equality with half the spatial MSE (zero-frequency column counted twice)
    half_mse = 0.5 * (spatial + edge) / (B * C * H * W)
    assert abs(float(value / half_mse) - 1) <= 2.0 / W + 1e-5


def test_mismatches_are_errors_unless_resample():
    s_map, t_small, t_narrow = torch.randn(2, 8, 6, 6), torch.randn(2, 16, 3, 3), torch.randn(2, 4, 6, 6)
    with pytest.raises(ValueError, match='grids differ'):
        make_loss([s_map], [t_small])
    with pytest.raises(ValueError, match='wider than teacher'):
        make_loss([s_map], [t_narrow])
    with pytest.raises(ValueError, match='resample'):
        SpectralKDLoss(student_taps=dict(feats=['a']), teacher_taps=dict(feats=['b']),
                       resample='bilinear')
    with pytest.raises(ValueError, match='pairs student and teacher'):
        SpectralKDLoss(student_taps=dict(feats=['a']), teacher_taps=dict(feats=['b', 'c']))
    # resample='area': the larger grid is area-pooled, the wider channels group-averaged.
    loss, sf, tf = make_loss([s_map], [t_small], resample='area')
    expected = direct(F.adaptive_avg_pool2d(s_map, (3, 3)), t_small)
    torch.testing.assert_close(loss(sf, tf)['loss_spectralkd'], expected)
    loss, sf, tf = make_loss([s_map], [t_narrow], resample='area')
    pooled = s_map.reshape(2, 4, 2, 6, 6).mean(2)
    torch.testing.assert_close(loss(sf, tf)['loss_spectralkd'], direct(pooled, t_narrow))


def test_demo_config_builds_and_runs():
    from mmkd_ext.registry import MODELS
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(DEMO_CFG)
    model = MODELS.build(dict(cfg.model, teacher_checkpoint=None))
    losses = model.loss(torch.randn(4, 1, 8, 8), _samples(4, 10))
    assert {'loss_kd', 'loss_spectralkd'} <= set(losses) and torch.isfinite(losses['loss_spectralkd'])


# ------------------------------------------------------------------------------------- configs
def _samples(n, num_classes):
    from mmpretrain.structures import DataSample
    return [DataSample().set_gt_label(i % num_classes) for i in range(n)]


def _shrink(spec, role):
    """A model config with the same layer names but tiny widths and images (test-only)."""
    from mmkd_ext.utils.config import load_model_config
    model = load_model_config(spec)
    bb = model.backbone
    kind = bb.type.split('.')[-1]
    if kind == 'VisionTransformer':  # DeiT students: 12 blocks as DeiT-T/S
        width = 16
        bb.update(arch=dict(embed_dims=width, num_layers=12, num_heads=2, feedforward_channels=32),
                  img_size=32)
    elif kind == 'CaiT':  # 24 blocks as CaiT-S24, wider than the student (channel pooling runs)
        width = 32
        bb.update(arch=dict(embed_dims=width, num_layers=24, num_heads=2), img_size=32)
    elif kind == 'SwinTransformer':
        width = 8 * 8
        bb.update(arch=dict(embed_dims=8, depths=[1, 1, 2 if role == 'teacher' else 1, 1],
                            num_heads=[1, 1, 2, 2]), img_size=32, window_size=2,
                  pad_small_map=True)
    else:
        raise AssertionError(f'unknown backbone {kind}')
    model.head.update(in_channels=width, num_classes=10)
    return model


@pytest.mark.parametrize('path', SPECTRAL_CFGS, ids=[osp.basename(p) for p in SPECTRAL_CFGS])
def test_config_builds_and_runs_one_iteration(path):
    from mmengine.optim import build_optim_wrapper

    from mmkd_ext.registry import MODELS
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(path)
    m = cfg.model
    name = osp.basename(path)
    # The recipe in the file name is the recipe in the file.
    gpus_batch, epochs = name.split('_')[3].split('-')
    assert cfg.train_dataloader.batch_size * int(gpus_batch.split('x')[0]) == 512
    assert cfg.train_cfg.max_epochs == int(epochs[:-1])
    assert cfg.optim_wrapper.optimizer.lr == 5e-4 and m.student_loss_weight == 0.1
    kd, spectral = m.methods
    assert (kd.type, kd.tau, kd.loss_weight) == ('KDLoss', 1.0, 0.9)
    assert spectral.loss_weight == (0.05 if 'swin' in name else 0.2)
    student = Config.fromfile(m.student)
    assert student.model.train_cfg is None, 'Mixup/CutMix must be off as the authors ran it'
    # Tiny versions of the same models (layer names kept), no teacher checkpoint, one step.
    model = MODELS.build(dict(
        m, student=_shrink(m.student, 'student'), teacher=_shrink(m.teacher, 'teacher'),
        teacher_checkpoint=None, input_shape=(3, 32, 32)))
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    data = dict(inputs=[torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8) for _ in range(2)],
                data_samples=_samples(2, 10))
    before = [p.detach().clone() for p in model.student.parameters()]
    log = model.train_step(data, optim)
    assert {'loss_kd', 'loss_spectralkd'} <= set(log)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in log.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.student.parameters()))


# ------------------------------------------------------------------------------------------ CaiT
def timm_cait_state_dict(dim=32, depth=3, heads=4, grid=(2, 2), classes=7, depth_cls=2):
    """Random tensors under timm's CaiT key names and shapes (what timm's ``cait_*`` checkpoints
    hold), written here without timm."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2  # noqa: E731
    sd = {'cls_token': r(1, 1, dim), 'pos_embed': r(1, grid[0] * grid[1], dim),
          'patch_embed.proj.weight': r(dim, 3, 16, 16), 'patch_embed.proj.bias': r(dim),
          'norm.weight': 1 + r(dim), 'norm.bias': r(dim), 'head.weight': r(classes, dim),
          'head.bias': r(classes)}

    def common(p):
        sd.update({f'{p}.norm1.weight': 1 + r(dim), f'{p}.norm1.bias': r(dim),
                   f'{p}.norm2.weight': 1 + r(dim), f'{p}.norm2.bias': r(dim),
                   f'{p}.gamma_1': r(dim), f'{p}.gamma_2': r(dim),
                   f'{p}.mlp.fc1.weight': r(4 * dim, dim), f'{p}.mlp.fc1.bias': r(4 * dim),
                   f'{p}.mlp.fc2.weight': r(dim, 4 * dim), f'{p}.mlp.fc2.bias': r(dim),
                   f'{p}.attn.proj.weight': r(dim, dim), f'{p}.attn.proj.bias': r(dim)})
    for i in range(depth):
        p = f'blocks.{i}'
        common(p)
        sd.update({f'{p}.attn.qkv.weight': r(3 * dim, dim), f'{p}.attn.qkv.bias': r(3 * dim),
                   f'{p}.attn.proj_l.weight': r(heads, heads), f'{p}.attn.proj_l.bias': r(heads),
                   f'{p}.attn.proj_w.weight': r(heads, heads), f'{p}.attn.proj_w.bias': r(heads)})
    for j in range(depth_cls):
        p = f'blocks_token_only.{j}'
        common(p)
        for n in 'qkv':
            sd.update({f'{p}.attn.{n}.weight': r(dim, dim), f'{p}.attn.{n}.bias': r(dim)})
    return sd


def reference_block(sd, p, x, heads):
    """timm's LayerScaleBlock with talking-heads attention, written from the paper (functional)."""
    ln = lambda t, n: F.layer_norm(t, t.shape[-1:], sd[f'{p}.{n}.weight'], sd[f'{p}.{n}.bias'], 1e-6)  # noqa
    lin = lambda t, n: F.linear(t, sd[f'{p}.{n}.weight'], sd[f'{p}.{n}.bias'])  # noqa: E731
    B, N, D = x.shape
    q, k, v = lin(ln(x, 'norm1'), 'attn.qkv').reshape(B, N, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
    a = q @ k.transpose(-2, -1) * (D // heads)**-0.5
    a = lin(a.permute(0, 2, 3, 1), 'attn.proj_l').permute(0, 3, 1, 2).softmax(-1)
    a = lin(a.permute(0, 2, 3, 1), 'attn.proj_w').permute(0, 3, 1, 2)
    x = x + sd[f'{p}.gamma_1'] * lin((a @ v).transpose(1, 2).reshape(B, N, D), 'attn.proj')
    h = lin(F.gelu(lin(ln(x, 'norm2'), 'mlp.fc1')), 'mlp.fc2')
    return x + sd[f'{p}.gamma_2'] * h


def test_cait_loads_a_converted_timm_checkpoint(tmp_path):
    from mmkd_ext.distillers.builder import build_model
    from mmkd_ext.utils.checkpoint import load_state_dict_with_report
    init_default_scope('mmpretrain')
    src, dst = tmp_path / 'cait_timm.pth', tmp_path / 'cait_mmkd.pth'
    sd = timm_cait_state_dict()
    torch.save({'model': sd}, src)  # timm's released files hold the weights under 'model'
    spec = importlib.util.spec_from_file_location(
        'conv', osp.join(ROOT, 'tools', 'model_converters', 'timm_cait_to_mmkd.py'))
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    conv.main([str(src), str(dst)])
    model = build_model(dict(
        type='ImageClassifier',
        backbone=dict(type='mmkd_ext.CaiT', img_size=32, arch=dict(embed_dims=32, num_layers=3,
                                                                    num_heads=4)),
        neck=None, head=dict(type='LinearClsHead', num_classes=7, in_channels=32)))
    report = load_state_dict_with_report(model, str(dst), min_matched=1.0)
    assert not report['missing'] and not report['unexpected'] and not report['mismatched']
    assert torch.equal(model.backbone.layers[2].attn.proj_w.weight, sd['blocks.2.attn.proj_w.weight'])
    assert torch.equal(model.backbone.cls_layers[1].ls2.weight, sd['blocks_token_only.1.gamma_2'])
    assert torch.equal(model.head.fc.weight, sd['head.weight'])
    # The trunk computes what timm's blocks compute with these weights.
    model.eval()
    img = torch.randn(2, 3, 32, 32)
    x = F.conv2d(img, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'], stride=16)
    x = x.flatten(2).transpose(1, 2) + sd['pos_embed']
    for i in range(3):
        x = reference_block(sd, f'blocks.{i}', x, heads=4)
    from mmkd_ext.distillers.taps import FeatureTaps
    taps = FeatureTaps(model, ['backbone.layers.2'])
    with torch.no_grad(), taps.record() as store:
        logits = model(img, mode='tensor')
    torch.testing.assert_close(store['backbone.layers.2'], x, rtol=1e-4, atol=1e-4)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
