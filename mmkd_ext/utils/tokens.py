"""Token features of vision transformers: extra tokens, the patch grid, tokens <-> maps.

mmpretrain's ViTs output (B, E + N, D) tokens where the E extra tokens (cls, and a distillation
token for DeiT's DistilledVisionTransformer) come first; the backbone says how many in
``num_extra_tokens``. The N patch tokens lie row-major on an (h, w) grid that depends on the input
size, so the grid is read at run time (from ``patch_embed``'s output, or from a Swin stage's output)
and never guessed as sqrt(N): inputs need not be square.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn

Grid = Tuple[int, int]


def num_extra_tokens(model: nn.Module) -> int:
    """How many non-patch tokens lead a token sequence of ``model`` (0 for CNNs and Swin).

    Reads ``num_extra_tokens`` from ``model.backbone`` (or ``model`` when it has no backbone);
    mmpretrain's VisionTransformer sets 1 (0 with ``with_cls_token=False``), DeiT's
    DistilledVisionTransformer 2.
    """
    backbone = getattr(model, 'backbone', model)
    return int(getattr(backbone, 'num_extra_tokens', 0))


def _is_grid(value) -> bool:
    return (isinstance(value, (tuple, list, torch.Size)) and len(value) == 2
            and all(isinstance(v, int) for v in value))


def split_tap(value) -> Tuple[torch.Tensor, Optional[Grid]]:
    """A tap value -> (features, grid or None).

    - a tensor: itself, no grid (a (B, C, h, w) map carries its grid in its shape);
    - ``(tokens, (h, w))`` as returned by mmpretrain's ``PatchEmbed`` and Swin's stages: both.
    """
    if torch.is_tensor(value):
        return value, None
    if isinstance(value, (tuple, list)) and value and torch.is_tensor(value[0]):
        grid = tuple(int(v) for v in value[1]) if len(value) > 1 and _is_grid(value[1]) else None
        return value[0], grid
    raise TypeError(f'Expected a tensor or a (tensor, (h, w)) tuple from the tapped module, got '
                    f'{type(value).__name__}.')


def grid_of(value) -> Grid:
    """The (h, w) patch grid of a tap value: a ``(tokens, (h, w))`` tuple or a (B, C, h, w) map.
    """
    feats, grid = split_tap(value)
    if grid is not None:
        return grid
    if feats.dim() == 4:
        return int(feats.shape[-2]), int(feats.shape[-1])
    raise ValueError(
        f'Cannot read a patch grid from a tap of shape {tuple(feats.shape)}: tap a module that '
        f'returns (tokens, (h, w)) (e.g. "backbone.patch_embed", or a Swin "backbone.stages.i") '
        f'or a (B, C, h, w) map.')


def patch_tokens(tokens: torch.Tensor, num_extra: int, grid: Optional[Grid] = None) -> torch.Tensor:
    """(B, E + N, D) -> (B, N, D): drop the ``num_extra`` leading tokens; check N on ``grid``."""
    if tokens.dim() != 3:
        raise ValueError(f'Expected tokens (B, N, D), got shape {tuple(tokens.shape)}.')
    out = tokens[:, num_extra:]
    if grid is not None and out.shape[1] != grid[0] * grid[1]:
        raise ValueError(
            f'{tokens.shape[1]} tokens minus {num_extra} extra token(s) is {out.shape[1]}, but the '
            f'patch grid {tuple(grid)} has {grid[0] * grid[1]} patches: wrong grid tap or wrong '
            f'number of extra tokens.')
    return out


def downsampled_grid(grid, n):
    """The grid of ``n`` tokens inside a hierarchical backbone whose patch grid is ``grid``: the
    patch grid itself, or it reduced by a power of two with padding (Swin blocks after patch
    merging), e.g. (56, 56) and 196 tokens -> (14, 14). Returns ``grid`` when nothing fits (the
    caller then reports the mismatch)."""
    h, w = grid
    for s in (1, 2, 4, 8, 16, 32, 64):
        g = (-(-h // s), -(-w // s))
        if g[0] * g[1] == n:
            return g
    return grid


def tokens_to_map(tokens: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Patch tokens (B, h*w, D), row-major on the grid -> map (B, D, h, w)."""
    b, n, d = tokens.shape
    h, w = grid
    if n != h * w:
        raise ValueError(f'{n} tokens do not fill the grid {h}x{w}.')
    return tokens.transpose(1, 2).reshape(b, d, h, w)


def map_to_tokens(fmap: torch.Tensor) -> torch.Tensor:
    """Map (B, D, h, w) -> tokens (B, h*w, D), row-major."""
    return fmap.flatten(2).transpose(1, 2)


def as_tokens(value, num_extra: int = 0, grid: Optional[Grid] = None) -> torch.Tensor:
    """Any tap value -> patch tokens (B, N, D).

    Tokens (B, E + N, D) lose their extra tokens; a map (B, C, h, w) becomes (B, h*w, C); a
    ``(tokens, (h, w))`` tuple gives its tokens (and its grid is used for the check).
    """
    feats, own_grid = split_tap(value)
    if feats.dim() == 4:
        return map_to_tokens(feats)
    return patch_tokens(feats, num_extra, grid or own_grid)


def feature_map(value, num_extra: int = 0, grid: Optional[Grid] = None) -> torch.Tensor:
    """Any tap value -> a map (B, C, h, w); the one way every method lays features on a grid.

    - a map (B, C, h, w) is returned as it is (CNN stages);
    - ``(tokens (B, L, C), (h, w))`` (``patch_embed``, Swin stages): laid on its own grid, which
      always wins over ``grid`` (it is the grid of these very tokens);
    - plain tokens (B, E + N, C) (ViT/DeiT/CaiT blocks): the ``num_extra`` leading tokens are
      dropped and the N patch tokens laid on ``grid`` (row-major), or on ``grid`` reduced by a power
      of two when N is smaller (Swin blocks after patch merging, see :func:`downsampled_grid`).
    """
    feats, own_grid = split_tap(value)
    if feats.dim() == 4:
        return feats
    if own_grid is not None:
        return tokens_to_map(patch_tokens(feats, 0, own_grid), own_grid)
    if grid is None:
        raise ValueError(
            f'Tokens of shape {tuple(feats.shape)} need their patch grid: tap a module that '
            f"returns (tokens, (h, w)) as `grid` (e.g. grid='backbone.patch_embed').")
    grid = downsampled_grid(grid, feats.shape[1] - num_extra)
    return tokens_to_map(patch_tokens(feats, num_extra, grid), grid)


def sincos_pos_embed(grid: Grid, dims: int, device=None, dtype=None) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding (1, h*w, dims) for any grid (no parameters).

    Half the channels encode the row, half the column (MAE's recipe); ``dims`` is padded with zeros
    when it is not a multiple of 4.
    """
    h, w = grid
    quarter = dims // 4
    exponent = torch.arange(quarter, device=device, dtype=torch.float32) / max(quarter, 1)
    omega = 1.0 / 10000**exponent
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing='ij')
    parts = []
    for pos in (ys.reshape(-1), xs.reshape(-1)):
        angles = pos[:, None] * omega[None]
        parts += [angles.sin(), angles.cos()]
    emb = torch.cat(parts, dim=1)
    if emb.shape[1] < dims:
        emb = torch.cat([emb, emb.new_zeros(emb.shape[0], dims - emb.shape[1])], dim=1)
    return emb.unsqueeze(0).to(dtype=dtype or torch.float32)


def feature_dims(shape: Sequence) -> int:
    """Channel count of a tap shape (batch dim removed): D of (N, D) tokens, C of (C, h, w) maps,
    or of the first element of a ``(tokens, (h, w))`` tuple shape."""
    if isinstance(shape, list):
        shape = shape[0]
    shape = tuple(shape)
    if len(shape) == 2:
        return int(shape[1])
    if len(shape) == 3:
        return int(shape[0])
    raise ValueError(f'Cannot tell the channel count of a feature of shape {shape}.')
