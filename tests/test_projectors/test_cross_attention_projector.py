"""CrossAttentionProjector (mmkd_ext/projectors/cross_attention_projector.py): the formula against a
computation written out here, token and map inputs, other grids, options, bad input.

(Shapes on real students and teachers through ScaleKDLoss: tests/test_losses/test_scalekd.py.)
"""
import pytest
import torch
import torch.nn.functional as F

import mmkd_ext  # noqa: F401
from mmkd_ext.projectors import CrossAttentionProjector
from mmkd_ext.projectors.cross_attention_projector import default_num_heads
from mmkd_ext.registry import MODELS

B, CS, CT = 2, 6, 8


def reference(cap, fmap, queries_map):
    """The CAP written out with explicit heads, softmax and loops over nothing hidden.

    fmap (B, Cs, H, W), queries_map (B, Ct, Hq, Wq) -> (B, Hq*Wq, Ct)."""
    b, _, h, w = fmap.shape
    qm = F.relu(F.conv2d(queries_map, cap.query_proj[0].weight, cap.query_proj[0].bias))
    q_tok = qm.flatten(2).transpose(1, 2)
    s = F.relu(cap.stem[1](F.conv2d(fmap, cap.stem[0].weight, cap.stem[0].bias, padding=1)))
    pos = cap.pos_embed
    if pos.shape[-2:] != (h, w):
        pos = F.interpolate(pos, size=(h, w), mode='bicubic', align_corners=False)
    kv = (s + pos).flatten(2).transpose(1, 2)
    q = F.linear(q_tok, cap.q.weight, cap.q.bias)
    k = F.linear(kv, cap.k.weight, cap.k.bias)
    v = F.linear(kv, cap.v.weight, cap.v.bias)
    heads = cap.num_heads
    d = CT // heads
    outs = []
    for i in range(heads):
        sl = slice(i * d, (i + 1) * d)
        logits = q[..., sl] @ k[..., sl].transpose(1, 2) / d**0.5 * cap.softmax_scale
        outs.append(torch.softmax(logits, dim=-1) @ v[..., sl])
    out = F.linear(torch.cat(outs, dim=-1), cap.proj.weight, cap.proj.bias)
    y = F.layer_norm(out, (CT, ), cap.norm.weight, cap.norm.bias)
    hidden = F.relu(F.linear(y, cap.mlp[0].weight, cap.mlp[0].bias))
    return y + F.linear(hidden, cap.mlp[2].weight, cap.mlp[2].bias)


def make(**kw):
    torch.manual_seed(0)
    args = dict(
        in_dims=CS, out_dims=CT, in_grid=(3, 4), query_grid=(2, 3), num_heads=2, softmax_scale=5.0)
    args.update(kw)
    cap = MODELS.build(dict(type='CrossAttentionProjector', **args))
    return cap.eval()  # BatchNorm with its running statistics, as the reference uses it


def test_learnable_queries_match_the_formula():
    cap = make()
    fmap = torch.randn(B, CS, 3, 4)
    out = cap(fmap)
    assert out.shape == (B, 6, CT)
    ref = reference(cap, fmap, cap.queries.expand(B, -1, -1, -1))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # The sharpening factor matters (a wrong scale would be caught).
    cap.softmax_scale = 1.0
    assert not torch.allclose(cap(fmap), ref, atol=1e-4)


def test_external_queries_and_other_grids():
    """External (B, Nq, Ct) query tokens on a given grid; a student map of another size than at
    construction (position embedding resized bicubically); learnable queries resized likewise."""
    cap = make(learnable_queries=False)
    assert cap.queries is None
    fmap = torch.randn(B, CS, 5, 7)
    queries = torch.randn(B, 4 * 5, CT, requires_grad=True)
    out = cap(fmap, queries=queries, query_grid=(4, 5))
    assert out.shape == (B, 20, CT)
    q_map = queries.transpose(1, 2).reshape(B, CT, 4, 5)
    torch.testing.assert_close(out, reference(cap, fmap, q_map), rtol=1e-5, atol=1e-5)
    out.sum().backward()  # the queries are differentiated (ScaleKD's proxy outputs)
    assert queries.grad is not None and queries.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='learnable_queries=False'):
        cap(fmap)
    with pytest.raises(ValueError, match='do not fill the construction grid'):
        cap(fmap, queries=queries)
    cap = make()
    out = cap(fmap, query_grid=(4, 6))
    resized = F.interpolate(cap.queries, size=(4, 6), mode='bicubic', align_corners=False)
    torch.testing.assert_close(
        out, reference(cap, fmap, resized.expand(B, -1, -1, -1)), rtol=1e-5, atol=1e-5)


def test_token_inputs_equal_map_inputs():
    """ViT tokens (cls first) with their grid, and a Swin stage's (tokens, (h, w)), give what the
    same features as a map give."""
    cap = make()
    fmap = torch.randn(B, CS, 3, 4)
    tokens = fmap.flatten(2).transpose(1, 2)
    with_cls = torch.cat([torch.randn(B, 1, CS), tokens], dim=1)
    expected = cap(fmap)
    torch.testing.assert_close(cap(with_cls, grid=(3, 4), num_extra=1), expected)
    torch.testing.assert_close(cap((tokens, (3, 4))), expected)


def test_layernorm_stem_and_train_mode_gradients():
    cap = make(stem_norm='LN').train()
    assert type(cap.stem[1]).__name__ == 'LayerNorm2d'
    fmap = torch.randn(B, CS, 3, 4, requires_grad=True)
    out = cap(fmap)
    ref = reference(cap, fmap, cap.queries.expand(B, -1, -1, -1))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    assert fmap.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cap.parameters())


def test_default_heads_and_init():
    # The reference configs' head counts for Swin-L (768, 1536) and Swin-B (512, 1024) teachers.
    assert [default_num_heads(c) for c in (768, 1536, 512, 1024)] == [16, 24, 8, 16]
    assert default_num_heads(12) == 6 and 12 % default_num_heads(12) == 0
    torch.manual_seed(0)
    cap = CrossAttentionProjector(64, 768, (8, 8), (2, 2))
    assert cap.num_heads == 16
    pos = cap.pos_embed.detach()  # trunc-normal, std 0.02
    assert pos.shape == (1, 64, 8, 8) and abs(float(pos.std()) - 0.02) < 0.002
    assert cap.queries.shape == (1, 768, 2, 2) and abs(float(cap.queries.std()) - 1) < 0.1


def test_bad_input():
    with pytest.raises(ValueError, match="stem_norm must be 'BN'"):
        make(stem_norm='GN')
    with pytest.raises(ValueError, match='does not divide'):
        make(num_heads=3)
    with pytest.raises(ValueError, match=r'query_grid must be \(h, w\)'):
        make(query_grid=(2, 0))
    cap = make()
    with pytest.raises(ValueError, match='expects 6 student channels'):
        cap(torch.randn(B, 5, 3, 4))
    with pytest.raises(ValueError, match=r'queries must be \(B=2, Nq, 8\)'):
        cap(torch.randn(B, CS, 3, 4), queries=torch.randn(B, 6, 7))
