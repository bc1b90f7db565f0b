"""CaiT backbone (mmkd_ext/models/backbones/cait.py): trunk, class attention, final norm, and the
timm checkpoint converter, each against a computation written here from the paper (and against
timm's own CaiT when timm is installed)."""
import importlib.util
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT
from mmengine.registry import init_default_scope

import mmkd_ext  # noqa: F401
from mmkd_ext.models.backbones.cait import convert_timm_cait

DIM, DEPTH, HEADS, CLASSES, DEPTH_CLS = 32, 3, 4, 7, 2


def timm_cait_state_dict(dim=DIM,
                         depth=DEPTH,
                         heads=HEADS,
                         grid=(2, 2),
                         classes=CLASSES,
                         depth_cls=DEPTH_CLS):
    """Random tensors under timm's CaiT key names and shapes (what timm's ``cait_*`` checkpoints
    hold), written here without timm."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2  # noqa: E731
    sd = {
        'cls_token': r(1, 1, dim),
        'pos_embed': r(1, grid[0] * grid[1], dim),
        'patch_embed.proj.weight': r(dim, 3, 16, 16),
        'patch_embed.proj.bias': r(dim),
        'norm.weight': 1 + r(dim),
        'norm.bias': r(dim),
        'head.weight': r(classes, dim),
        'head.bias': r(classes)
    }

    def common(p):
        sd.update({
            f'{p}.norm1.weight': 1 + r(dim),
            f'{p}.norm1.bias': r(dim),
            f'{p}.norm2.weight': 1 + r(dim),
            f'{p}.norm2.bias': r(dim),
            f'{p}.gamma_1': r(dim),
            f'{p}.gamma_2': r(dim),
            f'{p}.mlp.fc1.weight': r(4 * dim, dim),
            f'{p}.mlp.fc1.bias': r(4 * dim),
            f'{p}.mlp.fc2.weight': r(dim, 4 * dim),
            f'{p}.mlp.fc2.bias': r(dim),
            f'{p}.attn.proj.weight': r(dim, dim),
            f'{p}.attn.proj.bias': r(dim)
        })

    for i in range(depth):
        p = f'blocks.{i}'
        common(p)
        sd.update({
            f'{p}.attn.qkv.weight': r(3 * dim, dim),
            f'{p}.attn.qkv.bias': r(3 * dim),
            f'{p}.attn.proj_l.weight': r(heads, heads),
            f'{p}.attn.proj_l.bias': r(heads),
            f'{p}.attn.proj_w.weight': r(heads, heads),
            f'{p}.attn.proj_w.bias': r(heads)
        })
    for j in range(depth_cls):
        p = f'blocks_token_only.{j}'
        common(p)
        for n in 'qkv':
            sd.update({f'{p}.attn.{n}.weight': r(dim, dim), f'{p}.attn.{n}.bias': r(dim)})
    return sd


def _ln(sd, p, t):
    return F.layer_norm(t, t.shape[-1:], sd[f'{p}.weight'], sd[f'{p}.bias'], 1e-6)


def _lin(sd, p, t):
    return F.linear(t, sd[f'{p}.weight'], sd[f'{p}.bias'])


def _mlp(sd, p, t):
    return _lin(sd, f'{p}.mlp.fc2', F.gelu(_lin(sd, f'{p}.mlp.fc1', t)))


def reference_block(sd, p, x, heads):
    """timm's LayerScaleBlock with talking-heads attention, written from the paper (functional)."""
    B, N, D = x.shape
    q, k, v = _lin(sd, f'{p}.attn.qkv', _ln(sd, f'{p}.norm1', x)) \
        .reshape(B, N, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
    a = q @ k.transpose(-2, -1) * (D // heads)**-0.5
    a = _lin(sd, f'{p}.attn.proj_l', a.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).softmax(-1)
    a = _lin(sd, f'{p}.attn.proj_w', a.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    x = x + sd[f'{p}.gamma_1'] * _lin(sd, f'{p}.attn.proj',
                                      (a @ v).transpose(1, 2).reshape(B, N, D))
    return x + sd[f'{p}.gamma_2'] * _mlp(sd, p, _ln(sd, f'{p}.norm2', x))


def reference_class_block(sd, p, x, cls, heads):
    """A class-attention block (paper, Sec. 3): only the class token is updated; it queries
    [cls, patches] head by head (explicit loop over heads), then an MLP, both LayerScaled.

    x (B, N, D) patch tokens, cls (B, 1, D) -> (B, 1, D)."""
    u = _ln(sd, f'{p}.norm1', torch.cat([cls, x], dim=1))  # (B, 1 + N, D)
    D = u.shape[-1]
    hd = D // heads
    q = _lin(sd, f'{p}.attn.q', u[:, 0])  # the class token's query only: (B, D)
    k, v = _lin(sd, f'{p}.attn.k', u), _lin(sd, f'{p}.attn.v', u)  # (B, 1 + N, D)
    outs = []
    for h in range(heads):
        cols = slice(h * hd, (h + 1) * hd)
        logits = torch.einsum('bd,bnd->bn', q[:, cols], k[:, :, cols]) / hd**0.5
        outs.append(torch.einsum('bn,bnd->bd', logits.softmax(-1), v[:, :, cols]))
    attended = _lin(sd, f'{p}.attn.proj', torch.cat(outs, dim=-1))[:, None]  # (B, 1, D)
    cls = cls + sd[f'{p}.gamma_1'] * attended
    return cls + sd[f'{p}.gamma_2'] * _mlp(sd, p, _ln(sd, f'{p}.norm2', cls))


def reference_forward(sd, img, heads=HEADS, depth=DEPTH, depth_cls=DEPTH_CLS):
    """CaiT by hand: patches + position -> trunk -> class attention -> final norm over
    [cls, patches]. Returns (logits (B, classes), normalised tokens (B, 1 + N, D), trunk out)."""
    x = F.conv2d(img, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'], stride=16)
    x = x.flatten(2).transpose(1, 2) + sd['pos_embed']
    for i in range(depth):
        x = reference_block(sd, f'blocks.{i}', x, heads)
    cls = sd['cls_token'].expand(x.shape[0], -1, -1)
    for j in range(depth_cls):
        cls = reference_class_block(sd, f'blocks_token_only.{j}', x, cls, heads)
    normed = _ln(sd, 'norm', torch.cat([cls, x], dim=1))
    return _lin(sd, 'head', normed[:, 0]), normed, x


def build_classifier(out_type='cls_token'):
    from mmkd_ext.distillers.builder import build_model
    init_default_scope('mmpretrain')
    return build_model(
        dict(
            type='ImageClassifier',
            backbone=dict(
                type='mmkd_ext.CaiT',
                img_size=32,
                out_type=out_type,
                arch=dict(embed_dims=DIM, num_layers=DEPTH, num_heads=HEADS)),
            neck=None,
            head=dict(type='LinearClsHead', num_classes=CLASSES, in_channels=DIM)))


def test_cait_loads_a_converted_timm_checkpoint(tmp_path):
    from mmkd_ext.utils.checkpoint import load_state_dict_with_report
    src, dst = tmp_path / 'cait_timm.pth', tmp_path / 'cait_mmkd.pth'
    sd = timm_cait_state_dict()
    torch.save({'model': sd}, src)  # timm's released files hold the weights under 'model'
    spec = importlib.util.spec_from_file_location(
        'conv', osp.join(ROOT, 'tools', 'model_converters', 'timm_cait_to_mmkd.py'))
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    conv.main([str(src), str(dst)])
    model = build_classifier()
    report = load_state_dict_with_report(model, str(dst), min_matched=1.0)
    assert not report['missing'] and not report['unexpected'] and not report['mismatched']
    assert torch.equal(model.backbone.layers[2].attn.proj_w.weight,
                       sd['blocks.2.attn.proj_w.weight'])
    assert torch.equal(model.backbone.cls_layers[1].ls2.weight, sd['blocks_token_only.1.gamma_2'])
    assert torch.equal(model.head.fc.weight, sd['head.weight'])
    # The trunk computes what timm's blocks compute with these weights.
    model.eval()
    img = torch.randn(2, 3, 32, 32)
    logits_ref, _, trunk = reference_forward(sd, img)
    from mmkd_ext.distillers.taps import FeatureTaps
    taps = FeatureTaps(model, ['backbone.layers.2'])
    with torch.no_grad(), taps.record() as store:
        logits = model(img, mode='tensor')
    torch.testing.assert_close(store['backbone.layers.2'], trunk, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits, logits_ref, rtol=1e-4, atol=1e-4)


def test_class_attention_and_final_norm_match_the_paper():
    """Class-attention blocks, the final norm and both out_types against the hand computation;
    and the class token is what class attention made of the patches (they reach it)."""
    sd = timm_cait_state_dict()
    model = build_classifier().eval()
    model.load_state_dict(convert_timm_cait(sd), strict=True)
    img = torch.randn(3, 3, 32, 32)
    logits_ref, normed, trunk = reference_forward(sd, img)
    with torch.no_grad():
        feats = model.backbone(img)
        logits = model(img, mode='tensor')
    assert len(feats) == 1 and feats[0].shape == (3, DIM)
    torch.testing.assert_close(feats[0], normed[:, 0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits, logits_ref, rtol=1e-4, atol=1e-4)
    # One class-attention block, alone, on given patch tokens and class token.
    cls = torch.randn(3, 1, DIM)
    with torch.no_grad():
        got = model.backbone.cls_layers[0](trunk, cls)
    torch.testing.assert_close(
        got,
        reference_class_block(sd, 'blocks_token_only.0', trunk, cls, HEADS),
        rtol=1e-4,
        atol=1e-4)
    # The patch tokens are not updated by class attention: out_type='featmap' is the final norm of
    # the trunk's tokens (as a map), whatever the class token is.
    fm_model = build_classifier('featmap').eval()
    fm_model.load_state_dict(convert_timm_cait(sd), strict=True)
    with torch.no_grad():
        fmap = fm_model.backbone(img)[0]
    assert fmap.shape == (3, DIM, 2, 2)
    torch.testing.assert_close(fmap.flatten(2).transpose(1, 2), normed[:, 1:], rtol=1e-4, atol=1e-4)


def test_cait_matches_timm():
    """Our CaiT and timm's, with the same random weights (timm's state dict through
    convert_timm_cait): the same logits and the same normalised tokens."""
    timm = pytest.importorskip('timm')
    torch.manual_seed(0)
    ref = timm.create_model(
        'cait_xxs24_224',
        pretrained=False,
        img_size=32,
        embed_dim=DIM,
        depth=DEPTH,
        num_heads=HEADS,
        num_classes=CLASSES,
        depth_token_only=DEPTH_CLS).eval()
    with torch.no_grad():  # random values everywhere (LayerScale starts at 1e-5 otherwise)
        for name, p in ref.named_parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if name.endswith('norm.weight') else 0.0))
    model = build_classifier().eval()
    model.load_state_dict(convert_timm_cait(ref.state_dict()), strict=True)
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(img, mode='tensor'), ref(img), rtol=1e-4, atol=1e-4)
        tokens = ref.forward_features(img)  # (B, 1 + N, D) after the final norm
        torch.testing.assert_close(model.backbone(img)[0], tokens[:, 0], rtol=1e-4, atol=1e-4)
