"""Token helpers (mmkd_ext/utils/tokens.py): extra tokens, grids, tokens <-> maps, feature_map."""
import math

import pytest
import torch

from mmkd_ext.utils.tokens import (as_tokens, downsampled_grid, feature_map, map_to_tokens,
                                   num_extra_tokens, sincos_pos_embed, tokens_to_map)


def test_token_helpers():
    x = torch.arange(2 * 13 * 3, dtype=torch.float32).reshape(2, 13, 3)
    p = as_tokens(x, 1, (3, 4))
    assert p.shape == (2, 12, 3) and torch.equal(p, x[:, 1:])
    m = tokens_to_map(p, (3, 4))
    assert m.shape == (2, 3, 3, 4) and torch.equal(m[:, :, 1, 2], p[:, 1 * 4 + 2])
    assert torch.equal(map_to_tokens(m), p)
    with pytest.raises(ValueError, match='patch grid'):
        as_tokens(x, 2, (3, 4))
    assert num_extra_tokens(torch.nn.Linear(1, 1)) == 0


def swin_grids(h, w, stages=4):
    """The grids of a Swin's stages by its own rule, written out: patch merging pads an odd side by
    one and halves it."""
    grids = [(h, w)]
    for _ in range(stages - 1):
        h, w = (h + 1) // 2, (w + 1) // 2
        grids.append((h, w))
    return grids


@pytest.mark.parametrize('grid', [(56, 56), (7, 7), (3, 5), (9, 14), (1, 6), (25, 2)])
def test_downsampled_grid_follows_patch_merging(grid):
    for g in swin_grids(*grid):
        assert downsampled_grid(grid, g[0] * g[1]) == g, (grid, g)


def test_downsampled_grid_values():
    assert downsampled_grid((56, 56), 196) == (14, 14)  # the docstring's example
    assert downsampled_grid((56, 56), 56 * 56) == (56, 56)  # the patch grid itself first
    assert downsampled_grid((7, 7), 16) == (4, 4)  # padded: ceil(7 / 2)
    assert downsampled_grid((224, 224), 49) == (7, 7)  # 2**5
    # Nothing fits: the grid is returned unchanged (the caller reports the mismatch).
    assert downsampled_grid((4, 4), 5) == (4, 4)
    assert downsampled_grid((6, 6), 10) == (6, 6)


def test_downsampled_grid_on_a_real_swin():
    """mmpretrain's Swin (pad_small_map) on a 7x5 patch grid: each stage's own (h, w) output is
    what downsampled_grid infers from its token count."""
    from mmpretrain.models import SwinTransformer
    torch.manual_seed(0)
    swin = SwinTransformer(
        arch=dict(embed_dims=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1]),
        img_size=(28, 20),
        window_size=2,
        pad_small_map=True,
        out_indices=(0, 1, 2, 3))
    swin.eval()  # (mmpretrain's Swin.train() returns None)
    seen = []
    hooks = [s.register_forward_hook(lambda m, a, out: seen.append(out)) for s in swin.stages]
    with torch.no_grad():
        swin(torch.randn(1, 3, 28, 20))
    for h in hooks:
        h.remove()
    patch_grid = (7, 5)
    assert len(seen) == 4
    for tokens, hw in seen:
        assert downsampled_grid(patch_grid, tokens.shape[1]) == tuple(hw)
        # and feature_map lays such plain tokens on that grid
        fmap = feature_map(tokens, 0, patch_grid)
        assert fmap.shape[-2:] == tuple(hw)
        assert torch.equal(fmap, tokens.transpose(1, 2).reshape(1, -1, *hw))


def test_feature_map_of_a_map_is_the_map():
    m = torch.randn(2, 3, 4, 5)
    assert feature_map(m) is m
    assert feature_map(m, 1, (9, 9)) is m  # neither extra tokens nor a grid apply to maps


def test_feature_map_of_plain_tokens_drops_extra_tokens_row_major():
    b, e, h, w, d = 2, 2, 3, 4, 5
    x = torch.randn(b, e + h * w, d)
    fmap = feature_map(x, e, (h, w))
    assert fmap.shape == (b, d, h, w)
    for i in range(h):
        for j in range(w):
            assert torch.equal(fmap[:, :, i, j], x[:, e + i * w + j])
    # Fewer tokens than the patch grid: the grid reduced by patch merging (Swin blocks).
    y = torch.randn(b, 6, d)
    assert feature_map(y, 0, (3, 5)).shape == (b, d, 2, 3)
    with pytest.raises(ValueError, match='patch grid'):
        feature_map(x)  # plain tokens without a grid
    with pytest.raises(ValueError, match='extra token'):
        feature_map(x, 1, (h, w))  # 13 patch tokens do not fill 3x4


def test_feature_map_own_grid_wins_over_the_given_one():
    b, d = 2, 3
    tokens = torch.randn(b, 12, d)
    fmap = feature_map((tokens, (3, 4)), 0, (4, 3))
    assert fmap.shape == (b, d, 3, 4)
    assert torch.equal(fmap[:, :, 2, 1], tokens[:, 2 * 4 + 1])
    assert torch.equal(fmap, feature_map(tokens, 0, (3, 4)))
    # The tuple's tokens are its own grid's: no extra tokens are dropped from them.
    assert torch.equal(feature_map((tokens, (3, 4)), 1, None), fmap)


def test_sincos_pos_embed_by_hand():
    h, w, dims = 3, 5, 10  # 10 channels: 2 per quarter, 2 zeros of padding
    emb = sincos_pos_embed((h, w), dims)
    assert emb.shape == (1, h * w, dims)
    omega = [1.0, 1.0 / 10000**0.5]
    for r in range(h):
        for c in range(w):
            expected = ([math.sin(r * o) for o in omega] + [math.cos(r * o) for o in omega] +
                        [math.sin(c * o) for o in omega] + [math.cos(c * o)
                                                            for o in omega] + [0.0, 0.0])
            assert emb[0, r * w + c].tolist() == pytest.approx(expected, abs=1e-6)
    # Every position is told apart from every other (what the attention generators need).
    full = sincos_pos_embed((h, w), 8)[0]
    assert torch.cdist(full, full).add(torch.eye(h * w)).min() > 1e-3
