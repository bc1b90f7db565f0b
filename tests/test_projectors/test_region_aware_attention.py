"""RegionAwareAttention: region tokens, the attention with token-position encodings, the aligners,
and the shapes for CNN -> ViT, ViT -> CNN and CNN -> CNN pairs of real mmpretrain models."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import init_default_scope

import mmkd_ext  # noqa: F401
from mmkd_ext.distillers.taps import FeatureTaps, feature_shape
from mmkd_ext.projectors import RegionAwareAttention
from mmkd_ext.registry import MODELS


def test_region_tokens_use_kernel_ceil_h_over_g_after_nearest_resize():
    torch.manual_seed(0)
    shapes = [(3, 7, 7), (3, 2, 2), (3, 16, 16), (3, 5, 3)]
    raa = RegionAwareAttention(shapes, [(4, 8, 8)] * 4, grid=4, embed_dims=8, num_heads=2)
    assert [e.proj.kernel_size for e in raa.embeds] == [(2, 2), (1, 1), (4, 4), (2, 1)]
    for embed, (c, h, w) in zip(raa.embeds, shapes):
        x = torch.randn(2, c, h, w)
        ph, pw = embed.proj.kernel_size
        # 7 -> 8 (nearest: rows 0..6 then row 6 again), 2 -> 4, 16 stays, (5, 3) -> (8, 4)
        rows = torch.floor(torch.arange(4 * ph) * h / (4 * ph)).long()
        cols = torch.floor(torch.arange(4 * pw) * w / (4 * pw)).long()
        up = x[:, :, rows][:, :, :, cols]
        want = F.conv2d(up, embed.proj.weight, embed.proj.bias, stride=(ph, pw))
        got = embed(x)
        assert got.shape == (2, 16, 8)
        assert torch.allclose(got, want.flatten(2).transpose(1, 2), atol=1e-6)


def reference_attention(raa, tokens):
    """LayerNorm, q/k/v projections, position encoding sin/cos of the token index on q and k,
    8-head softmax attention, no residual; written with torch's own attention kernel."""
    b, n, d = tokens.shape
    x = F.layer_norm(tokens, (d, ), raa.norm.weight, raa.norm.bias)
    pos = torch.zeros(n, d)
    idx = torch.arange(n, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pos[:, 0::2], pos[:, 1::2] = torch.sin(idx * div), torch.cos(idx * div)
    w_k, w_v = raa.to_kv.weight.chunk(2)
    b_k, b_v = raa.to_kv.bias.chunk(2)
    q = x @ raa.to_q.weight.T + raa.to_q.bias + pos
    k = x @ w_k.T + b_k + pos
    v = x @ w_v.T + b_v
    h = raa.num_heads
    q, k, v = (t.reshape(b, n, h, d // h).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, n, d)


def test_attention_against_a_reference_and_positions_by_token():
    torch.manual_seed(0)
    raa = RegionAwareAttention([(4, 4, 4)] * 4, [(4, 4, 4)] * 4, grid=2, embed_dims=16, num_heads=8)
    with torch.no_grad():
        raa.norm.weight.normal_()
        raa.norm.bias.normal_()
    tokens = torch.randn(3, 16, 16)
    assert torch.allclose(raa.attend(tokens), reference_attention(raa, tokens), atol=1e-5)
    # The encoding is indexed by token: two identical samples in one batch give one result (the
    # reference code's encoding by batch position gives them different ones).
    same = tokens[:1].expand(2, -1, -1)
    out = raa.attend(same)
    assert torch.allclose(out[0], out[1], atol=1e-6)
    # ...and it matters: without it the result changes.
    pos = raa.pos_enc.clone()
    raa.pos_enc.zero_()
    assert not torch.allclose(raa.attend(tokens), reference_attention(raa, tokens), atol=1e-3)
    raa.pos_enc.copy_(pos)


def test_aligners_against_a_direct_recomputation():
    torch.manual_seed(0)
    raa = RegionAwareAttention(
        [(4, 8, 8)] * 2, [(6, 8, 8), (49, 12)], grid=2, embed_dims=8, num_heads=2).eval()
    for m in raa.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            with torch.no_grad():
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
                m.weight.normal_()
                m.bias.normal_()
    tokens = torch.randn(2, 4, 8)  # 2 x 2 regions of width 8
    bn = lambda x, m: (x - m.running_mean[None, :, None]) / torch.sqrt(  # noqa: E731
        m.running_var[None, :, None] + m.eps) * m.weight[None, :, None] + m.bias[None, :, None]
    # Map teacher (6, 8, 8): regions on the 2 x 2 grid, each repeated 4 x 4, BN, 1x1 conv.
    mapped = tokens.reshape(2, 2, 2, 8).permute(0, 3, 1, 2)
    up = mapped.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    norm = raa.aligners[0].proj[0]
    up = bn(up.flatten(2), norm).reshape(2, 8, 8, 8)
    want = torch.einsum('bdhw,cd->bchw', up, raa.aligners[0].proj[1].weight[:, :, 0, 0])
    assert torch.allclose(raa.aligners[0](tokens), want, atol=1e-5)
    # Token teacher (49 tokens, 12 dims): BN1d over the 4 token rows + Linear 8 -> 12, then BN1d
    # over the 12 channels + Linear over the tokens 4 -> 49.
    al = raa.aligners[1]
    x = bn(tokens, al.channels[0]) @ al.channels[1].weight.T + al.channels[1].bias
    x = bn(x.transpose(1, 2), al.tokens[0]) @ al.tokens[1].weight.T + al.tokens[1].bias
    assert torch.allclose(al(tokens), x.transpose(1, 2), atol=1e-5)


def tiny(kind):
    if kind == 'cnn':
        backbone = dict(type='ResNet', depth=18, stem_channels=8, base_channels=8)
        return dict(
            backbone=backbone,
            taps=[f'backbone.layer{i}' for i in range(1, 5)],
            model=dict(
                type='ImageClassifier',
                _scope_='mmpretrain',
                backbone=backbone,
                neck=dict(type='GlobalAveragePooling'),
                head=dict(type='LinearClsHead', num_classes=5, in_channels=64)))
    backbone = dict(
        type='VisionTransformer',
        img_size=32,
        patch_size=4,
        arch=dict(embed_dims=16, num_layers=4, num_heads=2, feedforward_channels=32))
    return dict(
        taps=[f'backbone.layers.{i}' for i in range(4)],
        grid='backbone.patch_embed',
        model=dict(
            type='ImageClassifier',
            _scope_='mmpretrain',
            backbone=backbone,
            head=dict(type='VisionTransformerClsHead', num_classes=5, in_channels=16)))


@pytest.mark.parametrize('student,teacher', [('cnn', 'vit'), ('vit', 'cnn'), ('cnn', 'cnn')])
def test_shapes_through_raa_and_aligners_on_real_pairs(student, teacher):
    from mmkd_ext.utils.tokens import feature_map, grid_of
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    s, t = tiny(student), tiny(teacher)
    s_model, t_model = MODELS.build(s['model']), MODELS.build(t['model']).eval()
    x = torch.randn(2, 3, 32, 32)
    feats = {}
    for role, spec, model in (('s', s, s_model), ('t', t, t_model)):
        paths = spec['taps'] + ([spec['grid']] if 'grid' in spec else [])
        with FeatureTaps(model, paths).record() as store:
            model(x, mode='tensor')
        grid = grid_of(store[spec['grid']]) if 'grid' in spec else None
        extra = 1 if 'grid' in spec else 0
        feats[role] = [feature_map(store[p], extra, grid) for p in spec['taps']]
        feats[role + '_raw'] = [feature_shape(store[p]) for p in spec['taps']]
    in_shapes = [tuple(f.shape[1:]) for f in feats['s']]
    out_shapes = [
        r if len(r) == 3 else (r[0] - 1, r[1])  # tokens: patch tokens only (cls first, dropped)
        for r in feats['t_raw']
    ]
    raa = MODELS.build(
        dict(
            type='RegionAwareAttention',
            in_shapes=in_shapes,
            out_shapes=out_shapes,
            embed_dims=32,
            num_heads=4))
    out = raa(feats['s'], [tuple(f.shape[-2:]) for f in feats['t']])
    for o, t_map, raw in zip(out, feats['t'], feats['t_raw']):
        if teacher == 'cnn':
            assert o.shape == t_map.shape  # (B, C_t, H_t, W_t)
        else:
            assert o.shape == (2, raw[0] - 1, raw[1])  # (B, 64 patch tokens, D_t)
    loss = sum(o.square().mean() for o in out)
    loss.backward()
    assert all(p.grad is not None for p in raa.parameters())


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match='one teacher shape per student stage'):
        RegionAwareAttention([(4, 8, 8)] * 2, [(4, 8, 8)])
    with pytest.raises(ValueError, match='must divide'):
        RegionAwareAttention([(4, 8, 8)], [(4, 8, 8)], embed_dims=10, num_heads=4)
    with pytest.raises(ValueError, match=r'\(C, H, W\) or'):
        RegionAwareAttention([(4, 8, 8)], [(4, 8, 8, 1)])
