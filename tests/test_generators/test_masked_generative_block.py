"""MaskedGenerativeBlock (mmkd_ext/generators/masked_generative_block.py): each variant against a
computation written here with the block's own weights, and what each position can see."""
import math

import pytest
import torch
import torch.nn.functional as F

import mmkd_ext  # noqa: F401
from mmkd_ext.generators import MaskedGenerativeBlock
from mmkd_ext.registry import MODELS
from mmkd_ext.utils.tokens import sincos_pos_embed

B, C, H, W = 2, 8, 3, 5
N = H * W


def make(variant, **kw):
    torch.manual_seed(0)
    block = MODELS.build(dict(type='MaskedGenerativeBlock', channels=C, variant=variant, **kw))
    with torch.no_grad():  # LayerNorms away from their (1, 0) start, so that they are checked
        for name, p in block.named_parameters():
            if 'norm' in name:
                p.add_(torch.randn_like(p) * 0.3)
    return block.eval()


def a_mask():
    mask = torch.zeros(B, N, dtype=torch.bool)
    mask[0, ::2] = True
    mask[1, [1, 4, 5, 9, 13]] = True
    return mask


def by_hand_attention_block(block, x, mask=None):
    """Pre-norm multi-head attention (keys restricted to visible tokens when ``mask`` is given, a
    sample with no visible token seeing all) + MLP, both residual, on tokens with the sine-cosine
    position embedding; explicit loops over samples and heads."""
    attn = block.attn
    heads = attn.num_heads
    hd = C // heads
    wq, wk, wv = attn.in_proj_weight.split(C)
    bq, bk, bv = attn.in_proj_bias.split(C)
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        t = x[b].reshape(C, N).T + sincos_pos_embed((H, W), C)[0]  # (N, C), row-major
        u = F.layer_norm(t, (C, ), block.norm1.weight, block.norm1.bias, block.norm1.eps)
        q, k, v = u @ wq.T + bq, u @ wk.T + bk, u @ wv.T + bv
        keys = torch.ones(N, dtype=torch.bool)
        if mask is not None and not mask[b].all():
            keys = ~mask[b]
        heads_out = []
        for h in range(heads):
            cols = slice(h * hd, (h + 1) * hd)
            scores = q[:, cols] @ k[keys][:, cols].T / math.sqrt(hd)
            heads_out.append(scores.softmax(-1) @ v[keys][:, cols])
        t = t + torch.cat(heads_out, 1) @ attn.out_proj.weight.T + attn.out_proj.bias
        fc1, fc2 = block.mlp[0], block.mlp[2]
        u = F.layer_norm(t, (C, ), block.norm2.weight, block.norm2.bias, block.norm2.eps)
        t = t + F.linear(F.gelu(F.linear(u, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
        out[b] = t.T.reshape(C, H, W)
    return out


def test_conv_variant_is_conv_relu_conv():
    block = make('conv')
    x = torch.randn(B, C, H, W)
    c1, c2 = block.generation[0], block.generation[2]
    expected = F.conv2d(
        F.relu(F.conv2d(x, c1.weight, c1.bias, padding=1)), c2.weight, c2.bias, padding=1)
    torch.testing.assert_close(block(x, a_mask()), expected)
    torch.testing.assert_close(block(x), expected)  # the mask is the caller's business here


def test_conv_variant_sees_a_five_by_five_neighbourhood():
    block = make('conv')
    x = torch.randn(1, C, 7, 7)
    x2 = x.clone()
    x2[0, :, 3, 3] += 5.0
    changed = (block(x2) - block(x)).abs().sum(1)[0] > 0
    rows, cols = torch.meshgrid(torch.arange(7), torch.arange(7), indexing='ij')
    near = ((rows - 3).abs() <= 2) & ((cols - 3).abs() <= 2)
    assert torch.equal(changed, near)


@pytest.mark.parametrize('heads', [None, 2])
def test_self_attention_variant_matches_the_hand_computation(heads):
    block = make('self_attention', num_heads=heads)
    assert block.attn.num_heads == (heads or 1)  # default C // 64, at least 1
    x = torch.randn(B, C, H, W)
    with torch.no_grad():
        expected = by_hand_attention_block(block, x)
        torch.testing.assert_close(block(x), expected, rtol=1e-4, atol=1e-5)
        # The mask does not restrict self-attention.
        torch.testing.assert_close(block(x, a_mask()), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('heads', [None, 2])
def test_cross_attention_variant_matches_the_hand_computation(heads):
    block = make('cross_attention', num_heads=heads)
    x = torch.randn(B, C, H, W)
    mask = a_mask()
    with torch.no_grad():
        torch.testing.assert_close(
            block(x, mask), by_hand_attention_block(block, x, mask), rtol=1e-4, atol=1e-5)
        # Every token masked in a sample: it sees all tokens (not NaN).
        full = torch.ones(B, N, dtype=torch.bool)
        out = block(x, full)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, by_hand_attention_block(block, x), rtol=1e-4, atol=1e-5)
        # No mask: every token is visible.
        torch.testing.assert_close(
            block(x), by_hand_attention_block(block, x), rtol=1e-4, atol=1e-5)


def test_what_each_attention_variant_can_see():
    x = torch.randn(B, C, H, W)
    # Perturbations that are not constant over channels (LayerNorm removes those).
    bump = torch.randn(C, 1) * 3.0
    mask = a_mask()
    vis, masked = (~mask[0]).nonzero()[0].item(), mask[0].nonzero()[0].item()
    for variant in ('self_attention', 'cross_attention'):
        block = make(variant)
        with torch.no_grad():
            y = block(x, mask).flatten(2)
            # Masked positions get information from visible ones (attention is global).
            x_vis = x.clone().flatten(2)
            x_vis[0, :, vis] += bump[:, 0]
            y_vis = block(x_vis.reshape_as(x), mask).flatten(2)
            assert not torch.allclose(y_vis[0, :, masked], y[0, :, masked], atol=1e-4)
            # Content at masked positions reaches the visible ones in self-attention only.
            x_m = x.clone().flatten(2)
            x_m[:, :, mask[0]] += bump  # the masked positions of sample 0, in both samples
            y_m = block(x_m.reshape_as(x), mask.new_tensor([list(mask[0])] * B)).flatten(2)
            y_same = block(x, mask.new_tensor([list(mask[0])] * B)).flatten(2)
            close = torch.allclose(y_m[:, :, ~mask[0]], y_same[:, :, ~mask[0]], atol=1e-5)
            assert close == (variant == 'cross_attention'), variant


def test_gradients_reach_every_parameter():
    mask = a_mask()
    for variant in MaskedGenerativeBlock.VARIANTS:
        block = make(variant).train()
        block(torch.randn(B, C, H, W), mask).pow(2).sum().backward()
        for name, p in block.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (variant, name)


def test_unknown_variant_is_an_error():
    with pytest.raises(ValueError, match='variant must be one of'):
        MaskedGenerativeBlock(8, variant='mlp')
