"""ResMLP backbone (mmkd_ext/models/backbones/resmlp.py) and its timm converter: the same weights
give the same logits as timm's resmlp_12_224 (timm is a test dependency); one layer against a
computation written here from the paper; the converter's key mapping; shape errors."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import init_default_scope

import mmkd_ext  # noqa: F401
from mmkd_ext.models.backbones.resmlp import ResMLP, convert_timm_resmlp
from mmkd_ext.registry import MODELS

timm = pytest.importorskip('timm')


def classifier(arch='s12', img_size=224, patch_size=16, classes=10):
    init_default_scope('mmpretrain')
    cfg = dict(
        type='ImageClassifier',
        _scope_='mmpretrain',
        backbone=dict(type='mmkd_ext.ResMLP', arch=arch, img_size=img_size, patch_size=patch_size),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=classes,
            in_channels=384 if isinstance(arch, str) else arch['embed_dims']))
    model = MODELS.build(cfg)
    model.init_weights()
    return model.eval()


def randomised(model):
    """Every tensor of a timm model set to random values (its init has zero heads, unit affines
    and tiny layer scales, which would hide mapping errors)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if p.dim() == 3 else 0.0))
    return model


def test_same_logits_as_timm_resmlp_12_224():
    ref = randomised(timm.create_model('resmlp_12_224', pretrained=False, num_classes=10)).eval()
    ours = classifier()
    missing, unexpected = ours.load_state_dict(convert_timm_resmlp(ref.state_dict()), strict=True)
    assert not missing and not unexpected
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = ref(x)
        got = ours(x, mode='tensor')
    assert expected.abs().mean() > 0.1  # the comparison is not between near-zero outputs
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_layer_against_the_paper():
    """One ResMLP layer written out: x + g1 * A^T-mixing, then x + g2 * MLP, with Affine
    pre-norms."""
    torch.manual_seed(0)
    arch = dict(embed_dims=8, num_layers=1, layer_scale_init=0.5)
    net = ResMLP(arch=arch, img_size=8, patch_size=4, final_norm=False).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 3, 8, 8)
    layer = net.layers[0]
    tokens = F.conv2d(
        x, net.patch_embed.projection.weight, net.patch_embed.projection.bias,
        stride=4).flatten(2).transpose(1, 2)  # (B, 4, 8)
    a1 = tokens * layer.norm1.alpha + layer.norm1.beta
    mixed = torch.einsum('mn,bnc->bmc', layer.token_mixing.weight, a1) + \
        layer.token_mixing.bias[None, :, None]
    tokens = tokens + layer.gamma1 * mixed
    a2 = tokens * layer.norm2.alpha + layer.norm2.beta
    fc1, fc2 = layer.channel_mlp[0], layer.channel_mlp[2]
    hidden = F.gelu(F.linear(a2, fc1.weight, fc1.bias))
    tokens = tokens + layer.gamma2 * F.linear(hidden, fc2.weight, fc2.bias)
    with torch.no_grad():
        out = net(x)[0]  # (B, C, h, w)
    # Another summation order (einsum here, Linear there) on values of ~10: float32 rounding of a
    # few 1e-6 relative (seen 3.5e-6 on one CPU, above assert_close's default 1.3e-6).
    torch.testing.assert_close(
        out, tokens.transpose(1, 2).reshape(2, 8, 2, 2), rtol=2e-5, atol=1e-5)


def test_out_indices_and_taps():
    net = ResMLP(
        arch=dict(embed_dims=16, num_layers=4), img_size=32, patch_size=8,
        out_indices=(1, -1)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outs = net(x)
        tokens, grid = net.patch_embed(x)
    assert [tuple(o.shape) for o in outs] == [(2, 16, 4, 4)] * 2
    assert grid == (4, 4) and tokens.shape == (2, 16, 16)
    assert net.layers[0].gamma1.shape == (16, ) and net.norm.alpha.shape == (1, 1, 16)


def test_converter_keys_and_old_affine_shapes():
    sd = {
        'module.stem.proj.weight': torch.zeros(4, 3, 2, 2),
        'blocks.0.norm1.alpha': torch.ones(4),  # timm < 0.5 / the ResMLP release: (C,)
        'blocks.0.ls1': torch.ones(4),
        'blocks.0.mlp_channels.fc2.bias': torch.ones(4),
        'head.weight': torch.ones(3, 4),
    }
    out = convert_timm_resmlp(sd)
    assert set(out) == {
        'backbone.patch_embed.projection.weight', 'backbone.layers.0.norm1.alpha',
        'backbone.layers.0.gamma1', 'backbone.layers.0.channel_mlp.2.bias', 'head.fc.weight'
    }
    assert out['backbone.layers.0.norm1.alpha'].shape == (1, 1, 4)
    with pytest.raises(KeyError, match='unknown timm ResMLP key'):
        convert_timm_resmlp({'blocks.0.attn.qkv.weight': torch.zeros(1)})


def test_bad_input_size_and_arch():
    net = ResMLP(arch=dict(embed_dims=8, num_layers=1), img_size=16, patch_size=8)
    with pytest.raises(ValueError, match='built for'):
        net(torch.randn(1, 3, 32, 32))
    with pytest.raises(KeyError, match='not one of'):
        ResMLP(arch='s7')
    with pytest.raises(ValueError, match='multiple of patch_size'):
        ResMLP(arch='s12', img_size=30, patch_size=16)
