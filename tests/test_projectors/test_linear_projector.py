"""LinearProjector (mmkd_ext/projectors/linear_projector.py): tokens, maps, identity, bad input."""
import pytest
import torch
import torch.nn.functional as F

import mmkd_ext  # noqa: F401
from mmkd_ext.projectors import LinearProjector
from mmkd_ext.registry import MODELS


def test_linear_projector_tokens_maps_identity():
    p = LinearProjector(4, 6)
    x = torch.randn(2, 5, 4)
    assert torch.allclose(p(x), x @ p.fc.weight.T + p.fc.bias)
    m = torch.randn(2, 4, 3, 5)
    conv = F.conv2d(m, p.fc.weight[:, :, None, None], p.fc.bias)
    assert torch.allclose(p(m), conv, atol=1e-6)
    same = MODELS.build(dict(type='LinearProjector', in_dims=4, out_dims=4))
    assert torch.equal(same(x), x) and not list(same.parameters())


def test_linear_projector_options_and_wrong_width():
    p = LinearProjector(4, 4, bias=False, identity_if_equal=False)
    assert p.fc is not None and p.fc.bias is None
    x = torch.randn(2, 5, 4)
    assert torch.allclose(p(x), x @ p.fc.weight.T)
    with pytest.raises(ValueError, match='expects 4 channels'):
        p(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match='expects 4 channels'):
        p(torch.randn(2, 3, 6, 6))  # a map: channels are dim 1
