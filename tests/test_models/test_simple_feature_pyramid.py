"""SimpleFeaturePyramid: the levels of a plain ViT's single map, against direct computations."""
import pytest
import torch
import torch.nn.functional as F

import mmkd_ext  # noqa: F401
from mmkd_ext.models.necks import SimpleFeaturePyramid
from mmkd_ext.registry import MODELS


def test_levels_are_the_documented_computations():
    torch.manual_seed(0)
    neck = MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=32, out_channels=8))
    neck.init_weights()
    x = torch.randn(2, 32, 6, 10)  # a stride-16 map of a 96 x 160 image
    outs = neck((x, ))
    shapes = [(2, 8, 24, 40), (2, 8, 12, 20), (2, 8, 6, 10), (2, 8, 3, 5), (2, 8, 2, 3)]
    assert [tuple(o.shape) for o in outs] == shapes

    def ln(t, norm):  # LayerNorm over channels, written out
        mu = t.mean(1, keepdim=True)
        var = t.var(1, keepdim=True, unbiased=False)
        return (t - mu) / torch.sqrt(var + 1e-6) * norm.weight.view(1, -1, 1, 1) + \
            norm.bias.view(1, -1, 1, 1)

    def head(i, t):
        lat, out = neck.lateral_convs[i], neck.output_convs[i]
        t = ln(F.conv2d(t, lat[0].weight), lat[1])
        return ln(F.conv2d(t, out[0].weight, padding=1), out[1])

    up = neck.rescales[0]
    x4 = F.conv_transpose2d(x, up[0].weight, up[0].bias, stride=2)
    x4 = F.conv_transpose2d(F.gelu(ln(x4, up[1])), up[3].weight, up[3].bias, stride=2)
    x2 = F.conv_transpose2d(x, neck.rescales[1].weight, neck.rescales[1].bias, stride=2)
    expected = [head(0, x4), head(1, x2), head(2, x), head(3, F.max_pool2d(x, 2))]
    for got, want in zip(outs, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outs[4], outs[3][:, :, ::2, ::2])  # P6: stride-2 subsampling
    # A bare map is taken as well as a tuple of maps (its last one).
    torch.testing.assert_close(neck(x)[2], outs[2])


def test_bad_arguments_say_what_is_expected():
    with pytest.raises(ValueError, match='scale factors must be among'):
        SimpleFeaturePyramid(16, scale_factors=(3.0, ))
    with pytest.raises(TypeError, match="in_channels must be an int"):
        SimpleFeaturePyramid([16, 32])
    with pytest.raises(ValueError, match='num_outs'):
        SimpleFeaturePyramid(16, num_outs=3)
    neck = SimpleFeaturePyramid(16, out_channels=4)
    with pytest.raises(ValueError, match="out_type='featmap'"):
        neck(torch.randn(2, 5, 16))  # tokens, not a map
