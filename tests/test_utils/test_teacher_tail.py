"""TeacherTail (mmkd_ext/utils/teacher_tail.py): the frozen teacher's last stage(s) run on given
tokens with autograd, on real (narrow) mmpretrain / mmkd_ext teachers.

The reference for every teacher is its own forward pass: the tokens its tail-input module gave,
fed through the tail, must give exactly what its final norm gave.
"""
import copy

import pytest
import torch
from mmengine.registry import init_default_scope

import mmkd_ext  # noqa: F401
from mmkd_ext.distillers.taps import FeatureTaps
from mmkd_ext.registry import MODELS
from mmkd_ext.utils.teacher_tail import TeacherTail

CLASSES = 5


def classifier(backbone, width, head='LinearClsHead', neck=True):
    init_default_scope('mmpretrain')
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            _scope_='mmpretrain',
            backbone=backbone,
            neck=dict(type='GlobalAveragePooling') if neck else None,
            head=dict(type=head, num_classes=CLASSES, in_channels=width)))
    model.init_weights()
    return model.eval()


def swin(img=224, v2=False):
    if v2:
        backbone = dict(
            type='SwinTransformerV2',
            arch=dict(
                embed_dims=16,
                depths=[1, 1, 2, 2],
                num_heads=[1, 2, 2, 4],
                extra_norm_every_n_blocks=0),
            img_size=img,
            window_size=[7, 7, 7, 7],
            drop_path_rate=0.2)
    else:
        backbone = dict(
            type='SwinTransformer',
            arch=dict(embed_dims=16, depths=[1, 1, 2, 2], num_heads=[1, 2, 2, 4]),
            img_size=img,
            window_size=7,
            drop_path_rate=0.2)
    return classifier(backbone, 128)


def vit(kind='VisionTransformer', img=64, width=32, depth=4):
    arch = dict(embed_dims=width, num_layers=depth, num_heads=2)
    if kind != 'mmkd_ext.CaiT':
        arch['feedforward_channels'] = 2 * width
    else:
        arch['init_values'] = 0.1  # large layer scales, so the tail blocks change the tokens
    backbone = dict(type=kind, arch=arch, img_size=img, patch_size=8, drop_path_rate=0.2)
    # (CaiT returns its class token (B, D): a plain linear head)
    head = {
        'mmkd_ext.CaiT': 'LinearClsHead',
        'DistilledVisionTransformer': 'DeiTClsHead'
    }.get(kind, 'VisionTransformerClsHead')
    model = classifier(backbone, width, head=head, neck=False)
    with torch.no_grad():  # DeiT3's layer scales start near 0: make the blocks act (as above)
        for name, p in model.named_parameters():
            if 'gamma' in name:
                p.fill_(0.5)
    return model


def record(model, paths, x):
    with torch.no_grad(), FeatureTaps(model, paths, 'teacher').record() as store:
        model(x, mode='tensor')
    return store


@pytest.mark.parametrize('size', [(224, 224), (240, 304)], ids=['224', '240x304'])
@pytest.mark.parametrize('v2', [False, True], ids=['swin', 'swin_v2'])
def test_swin_tail_reproduces_the_teacher(size, v2):
    """Stage-3 tokens of the teacher -> PatchMerging + last stage + norm3 == the teacher's norm3
    output, at 224 px and at a non-square size whose stage-3 grid (15 x 19) is odd (padding in the
    patch merging)."""
    torch.manual_seed(0)
    teacher = swin(v2=v2)
    tail = TeacherTail(teacher)
    assert (tail.kind, tail.input_path, tail.final_path) == ('swin_v2' if v2 else 'swin',
                                                             'backbone.stages.2', 'backbone.norm3')
    assert (tail.in_dims, tail.out_dims) == (64, 128)
    x = torch.randn(2, 3, *size)
    store = record(teacher, [tail.input_path, tail.final_path], x)
    tokens, grid = store[tail.input_path]
    assert grid == (size[0] // 16, size[1] // 16)
    out, out_grid = tail(tokens, grid)
    assert out_grid == (-(-grid[0] // 2), -(-grid[1] // 2))
    final = store[tail.final_path]
    assert out.shape == final.shape == (2, out_grid[0] * out_grid[1], 128)
    torch.testing.assert_close(out, final, rtol=0, atol=1e-6)
    # The tail really computes (other tokens -> other output).
    assert not torch.allclose(tail(torch.randn_like(tokens), grid)[0], final, atol=1e-3)


@pytest.mark.parametrize('kind,extra', [('VisionTransformer', 1), ('DistilledVisionTransformer', 2),
                                        ('mmkd_ext.DeiT3', 1), ('DeiT3', 1), ('mmkd_ext.CaiT', 0)])
@pytest.mark.parametrize('tail_blocks', [1, 2])
def test_vit_tail_reproduces_the_teacher(kind, extra, tail_blocks):
    """The last ``tail_blocks`` blocks + ln1 on the teacher's own tokens (its extra tokens leading)
    == its ln1 output (patch tokens), on a non-square input."""
    torch.manual_seed(0)
    teacher = vit(kind)
    tail = TeacherTail(teacher, tail_blocks=tail_blocks)
    assert tail.num_extra == extra and tail.in_dims == tail.out_dims == 32
    assert tail.input_path == f'backbone.layers.{3 - tail_blocks}'
    assert tail.final_path == 'backbone.ln1'
    x = torch.randn(2, 3, 64, 80)
    store = record(teacher, [tail.input_path, tail.final_path, 'backbone.patch_embed'], x)
    grid = store['backbone.patch_embed'][1]
    assert grid == (8, 10)
    seq = store[tail.input_path]
    out, out_grid = tail(seq[:, extra:], grid, seq[:, :extra] if extra else None)
    assert out_grid == grid
    final = store[tail.final_path][:, tail.final_extra:]
    assert out.shape == final.shape == (2, 80, 32)
    torch.testing.assert_close(out, final, rtol=0, atol=1e-6)
    if extra:  # the extra tokens matter: other ones give another result
        other = tail(seq[:, extra:], grid, torch.randn_like(seq[:, :extra]))[0]
        assert not torch.allclose(other, final, atol=1e-4)


def test_autograd_through_frozen_weights_even_under_no_grad():
    """Gradient reaches the input tokens, never the teacher's weights (even those that would
    accept it); nothing of the teacher changes."""
    torch.manual_seed(0)
    teacher = swin()
    assert all(p.requires_grad for p in teacher.parameters())
    flags = {n: p.requires_grad for n, p in teacher.named_parameters()}
    before = copy.deepcopy(teacher.state_dict())
    tail = TeacherTail(teacher)
    tokens = torch.randn(2, 196, 64, requires_grad=True)
    with torch.no_grad():
        out, _ = tail(tokens, (14, 14))
    assert out.requires_grad
    out.pow(2).sum().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert flags == {n: p.requires_grad for n, p in teacher.named_parameters()}
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not teacher.training


def test_errors():
    torch.manual_seed(0)
    resnet = classifier(dict(type='ResNet', depth=18, base_channels=8), 64)
    with pytest.raises(TypeError, match='Supported: mmpretrain SwinTransformer') as err:
        TeacherTail(resnet)
    assert 'ResNet' in str(err.value) and 'VisionTransformer' in str(err.value)
    teacher = vit()
    for bad in (None, 0, 4, 1.5):
        with pytest.raises(ValueError, match=r'needs tail_blocks.*\[1, 3\]'):
            TeacherTail(teacher, tail_blocks=bad)
    tail = TeacherTail(teacher, tail_blocks=1)
    with pytest.raises(ValueError, match='pass them as `extra`'):
        tail(torch.randn(2, 64, 32), (8, 8))
    with pytest.raises(ValueError, match='do not fill the grid'):
        tail(torch.randn(2, 63, 32), (8, 8), torch.randn(2, 1, 32))
    with pytest.raises(ValueError, match=r'takes patch tokens \(B, N, 32\)'):
        tail(torch.randn(2, 64, 16), (8, 8), torch.randn(2, 1, 16))
    sw = swin()
    with pytest.raises(ValueError, match='leave tail_blocks=None'):
        TeacherTail(sw, tail_blocks=1)
    sw.train()
    with pytest.raises(RuntimeError, match='teacher is in train mode'):
        TeacherTail(sw)(torch.randn(1, 196, 64), (14, 14))


def test_deepcopy_shares_the_teacher():
    teacher = swin()
    tail = TeacherTail(teacher)
    holder = {'tail': tail}
    copied = copy.deepcopy(holder)['tail']
    assert copied is not tail and copied.teacher is teacher
