"""timm -> mmpretrain classifier checkpoints (mmkd_ext/models/timm_conversion.py and
tools/model_converters/timm_to_mmpretrain.py): a checkpoint written here in timm's training-script
layout goes through the tool and gives mmpretrain classifiers the logits of timm's models on the
same weights (ViT, ConvNeXt, Swin in timm 0.6.5's and today's layouts; ResMLP:
tests/test_models/test_resmlp.py)."""
import os.path as osp
import re
import sys

import pytest
import torch
from conftest import ROOT
from mmengine.registry import init_default_scope

import mmkd_ext  # noqa: F401
from mmkd_ext.models.timm_conversion import convert_timm_classifier
from mmkd_ext.registry import MODELS
from mmkd_ext.utils.checkpoint import load_checkpoint_file, unwrap_state_dict

timm = pytest.importorskip('timm')
sys.path.insert(0, osp.join(ROOT, 'tools', 'model_converters'))
import timm_to_mmpretrain  # noqa: E402

CLASSES = 10


def randomised(model):
    """Random values in every tensor (timm's init has zero heads and unit norms that would hide a
    swapped key)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.2 if 'gamma' not in name else 0.5
            p.copy_(
                torch.randn(p.shape, generator=g) * scale +
                (1.0 if 'norm' in name and name.endswith('weight') else 0.))
    return model.eval()


def mm_classifier(backbone, head, neck=None):
    init_default_scope('mmpretrain')
    model = MODELS.build(
        dict(type='ImageClassifier', _scope_='mmpretrain', backbone=backbone, neck=neck, head=head))
    return model.eval()


def timm_06_swin_layout(state):
    """The installed timm's Swin keys in timm 0.6.5's layout (OFA's teachers): the patch merging
    that starts stage i (today) ends stage i - 1 there, and the head is a bare Linear."""
    out = {}
    for k, v in state.items():
        k = re.sub(r'^layers\.(\d+)\.downsample\.',
                   lambda m: f'layers.{int(m.group(1)) - 1}.downsample.', k)
        out[k.replace('head.fc.', 'head.')] = v
    return out


def timm_swin():
    return timm.models.swin_transformer.SwinTransformer(
        img_size=IMG_SWIN,
        patch_size=4,
        window_size=2,
        embed_dim=16,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        num_classes=CLASSES)


def mm_swin():
    return mm_classifier(
        dict(
            type='SwinTransformer',
            img_size=IMG_SWIN,
            window_size=2,
            arch=dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8])),
        dict(type='LinearClsHead', num_classes=CLASSES, in_channels=128),
        neck=dict(type='GlobalAveragePooling'))


IMG_SWIN = 64  # a 16x16 patch grid: stages of 16, 8, 4, 2 patches, windows of 2

CASES = {
    'vit': (lambda: timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=CLASSES),
            lambda: mm_classifier(
                dict(
                    type='VisionTransformer',
                    img_size=32,
                    patch_size=8,
                    arch=dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=128)),
                dict(type='VisionTransformerClsHead', num_classes=CLASSES, in_channels=32))),
    'convnext': (lambda: timm.models.convnext.ConvNeXt(
        depths=(1, 2, 1, 1), dims=(8, 16, 32, 64), num_classes=CLASSES), lambda: mm_classifier(
            dict(type='ConvNeXt', arch=dict(depths=[1, 2, 1, 1], channels=[8, 16, 32, 64])),
            dict(type='LinearClsHead', num_classes=CLASSES, in_channels=64))),
    'swin': (timm_swin, mm_swin),
}


@pytest.mark.parametrize('arch', sorted(CASES))
def test_tool_gives_timm_logits(arch, tmp_path):
    make_timm, make_ours = CASES[arch]
    ref = randomised(make_timm())
    src, dst = tmp_path / 'timm.pth.tar', tmp_path / 'mm.pth'
    state = ref.state_dict()
    if arch == 'swin':
        state = timm_06_swin_layout(state)
    # timm's train.py saver: epoch, arch, the weights under state_dict, DDP prefix possible.
    torch.save(
        dict(epoch=299, arch=arch, state_dict={
            f'module.{k}': v
            for k, v in state.items()
        }), src)
    timm_to_mmpretrain.main([str(src), str(dst), '--arch', arch])
    ours = make_ours()
    state = unwrap_state_dict(load_checkpoint_file(str(dst), map_location='cpu'))
    missing, unexpected = ours.load_state_dict(state, strict=False)
    # (mmpretrain's Swin keeps its relative-position index as a buffer: built, not loaded.)
    assert not unexpected and all('relative_position_index' in k for k in missing), missing
    size = IMG_SWIN if arch == 'swin' else 32
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected, got = ref(x), ours(x, mode='tensor')
    assert expected.abs().mean() > 0.05
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_swin_today_layout_equals_the_06_layout():
    state = randomised(timm_swin()).state_dict()
    today = convert_timm_classifier(state, 'swin')
    old = convert_timm_classifier(timm_06_swin_layout(state), 'swin')
    assert today.keys() == old.keys() and all(torch.equal(today[k], old[k]) for k in today)


def test_unknown_keys_and_families_are_errors():
    with pytest.raises(KeyError, match='unknown timm ViT key'):
        convert_timm_classifier({'blocks.0.attn.q.weight': torch.zeros(1)}, 'vit')
    with pytest.raises(KeyError, match='No timm converter'):
        convert_timm_classifier({}, 'mixer')
