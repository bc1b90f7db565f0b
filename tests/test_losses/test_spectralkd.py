"""SpectralKD: the loss (the analysis tool: tests/test_analysis/test_spectral_analysis.py; the
CaiT backbone: tests/test_models/test_cait.py; the configs are trained by tests/test_configs.py)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mmkd_ext  # noqa: F401
from mmkd_ext.losses import SpectralKDLoss


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
    # the teacher tokens (no extra token, CaiT-like) on the same grid; pair 2: Swin-like (tokens,
    # hw).
    s_maps = [torch.randn(B, 4, 6, 7), torch.randn(B, 8, 3, 5), torch.randn(B, 6, 4, 4)]
    t_maps = [torch.randn(B, 8, 6, 7), torch.randn(B, 16, 3, 5), torch.randn(B, 12, 4, 4)]
    for m in s_maps:
        m.requires_grad_(True)
    tok = lambda m: m.flatten(2).transpose(1, 2)  # noqa: E731
    cls = torch.randn(B, 1, 8)
    s_vals = [s_maps[0], torch.cat([cls, tok(s_maps[1])], 1), (tok(s_maps[2]), (4, 4))]
    t_vals = [t_maps[0], tok(t_maps[1]), (tok(t_maps[2]), (4, 4))]
    grid_val = (torch.zeros(B, 15, 8), (3, 5))
    loss, sf, tf = make_loss(
        s_vals,
        t_vals,
        _Fake(extra=1),
        _Fake(extra=0),
        s_grid=grid_val,
        t_grid=grid_val,
        loss_weight=0.2)
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
    d = torch.fft.fft2(fs - ft, norm='ortho')  # full spectrum
    edge = d[..., 0].abs().pow(2).sum()  # zero-frequency column
    if W % 2 == 0:
        edge = edge + d[..., W // 2].abs().pow(2).sum()  # Nyquist column
    spatial = (fs - ft).pow(2).sum()
    n_half = 2 * B * C * H * (W // 2 + 1)  # stacked real + imaginary
    # exact identity (float32 FFT inside the loss)
    torch.testing.assert_close(value * n_half, (spatial + edge) / 2, rtol=1e-5, atol=1e-6)
    # near-equality with half the spatial MSE (zero-frequency column counted twice)
    half_mse = 0.5 * (spatial + edge) / (B * C * H * W)
    assert abs(float(value / half_mse) - 1) <= 2.0 / W + 1e-5


def test_mismatches_are_errors_unless_resample():
    s_map, t_small, t_narrow = torch.randn(2, 8, 6, 6), torch.randn(2, 16, 3,
                                                                    3), torch.randn(2, 4, 6, 6)
    with pytest.raises(ValueError, match='grids differ'):
        make_loss([s_map], [t_small])
    with pytest.raises(ValueError, match='wider than teacher'):
        make_loss([s_map], [t_narrow])
    with pytest.raises(ValueError, match='resample'):
        SpectralKDLoss(
            student_taps=dict(feats=['a']), teacher_taps=dict(feats=['b']), resample='bilinear')
    with pytest.raises(ValueError, match='pairs student and teacher'):
        SpectralKDLoss(student_taps=dict(feats=['a']), teacher_taps=dict(feats=['b', 'c']))
    # resample='area': the larger grid is area-pooled, the wider channels group-averaged.
    loss, sf, tf = make_loss([s_map], [t_small], resample='area')
    expected = direct(F.adaptive_avg_pool2d(s_map, (3, 3)), t_small)
    torch.testing.assert_close(loss(sf, tf)['loss_spectralkd'], expected)
    loss, sf, tf = make_loss([s_map], [t_narrow], resample='area')
    pooled = s_map.reshape(2, 4, 2, 6, 6).mean(2)
    torch.testing.assert_close(loss(sf, tf)['loss_spectralkd'], direct(pooled, t_narrow))
