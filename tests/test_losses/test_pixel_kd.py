"""KDLoss on per-pixel class scores (B, C, H, W): every pixel is a sample."""
import math

import pytest
import torch

import mmkd_ext  # noqa: F401
from mmkd_ext.losses import KDLoss


def reference_pixel_kd(z_s, z_t, tau):
    """T^2 * mean over pixels of sum_c p_t (log p_t - log p_s), pixel by pixel in plain Python."""
    b, c, h, w = z_s.shape
    total = 0.0
    for i in range(b):
        for y in range(h):
            for x in range(w):
                s = [float(z_s[i, k, y, x]) / tau for k in range(c)]
                t = [float(z_t[i, k, y, x]) / tau for k in range(c)]
                log_zs = math.log(sum(math.exp(v) for v in s))
                log_zt = math.log(sum(math.exp(v) for v in t))
                for k in range(c):
                    log_pt, log_ps = t[k] - log_zt, s[k] - log_zs
                    total += math.exp(log_pt) * (log_pt - log_ps)
    return tau**2 * total / (b * h * w)


@pytest.mark.parametrize('tau', [1.0, 4.0])
def test_pixel_kd_matches_a_pixel_by_pixel_computation(tau):
    g = torch.Generator().manual_seed(0)
    z_s = torch.randn(2, 5, 3, 4, generator=g) * 3
    z_t = torch.randn(2, 5, 3, 4, generator=g) * 3
    out = KDLoss(tau=tau, loss_weight=0.5, name='pixel_kd')(dict(logits=z_s), dict(logits=z_t))
    assert list(out) == ['loss_pixel_kd']
    assert out['loss_pixel_kd'].item() == pytest.approx(
        0.5 * reference_pixel_kd(z_s, z_t, tau), rel=1e-5)


def test_pixel_kd_is_the_mean_of_per_image_losses_and_zero_at_the_teacher():
    g = torch.Generator().manual_seed(1)
    z_s, z_t = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    loss = KDLoss(tau=2.0)
    whole = loss(dict(logits=z_s), dict(logits=z_t))['loss_kd']
    per_image = [
        loss(dict(logits=z_s[i:i + 1]), dict(logits=z_t[i:i + 1]))['loss_kd'] for i in range(3)
    ]
    assert whole.item() == pytest.approx(sum(v.item() for v in per_image) / 3, rel=1e-5)
    assert loss(dict(logits=z_t), dict(logits=z_t))['loss_kd'].abs().item() < 1e-6


def test_pixel_kd_sends_gradient_to_the_student_only():
    z_s = torch.randn(2, 3, 2, 2, requires_grad=True)
    z_t = torch.randn(2, 3, 2, 2, requires_grad=True)
    KDLoss()(dict(logits=z_s), dict(logits=z_t))['loss_kd'].backward()
    assert z_s.grad is not None and z_s.grad.abs().sum() > 0
    assert z_t.grad is None


def test_pixel_kd_maps_of_different_shapes_are_an_error():
    loss = KDLoss()
    with pytest.raises(ValueError, match='same shape'):
        loss(dict(logits=torch.zeros(1, 3, 4, 4)), dict(logits=torch.zeros(1, 3, 2, 2)))
    with pytest.raises(ValueError, match=r'same classes and the same\s+resolution'):
        loss.setup({'logits': (3, 4, 4)}, {'logits': (3, 2, 2)}, torch.nn.Identity(),
                   torch.nn.Identity())
