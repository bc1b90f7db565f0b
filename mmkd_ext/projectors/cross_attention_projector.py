"""ScaleKD's Cross Attention Projector (CAP): any student feature -> teacher tokens on the teacher's
grid, by cross attention from teacher-sized queries to the student's positions."""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model.weight_init import trunc_normal_

from mmkd_ext.registry import MODELS
from mmkd_ext.utils.tokens import feature_map, map_to_tokens, tokens_to_map

Grid = Tuple[int, int]


def default_num_heads(dims: int) -> int:
    """Attention heads of a CAP with ``dims`` output channels: ``8 * ceil(dims / 512)`` (head width
    32 to 64), lowered to the nearest divisor of ``dims``.

    This gives the head counts of the ScaleKD reference configs for Swin-L (768 -> 16 heads,
    1536 -> 24) and Swin-B (512 -> 8, 1024 -> 16) teachers; the reference's Swin-S configs use 3
    and 6 (set ``num_heads`` to match them).
    """
    heads = 8 * math.ceil(dims / 512)
    while dims % heads:
        heads -= 1
    return heads


def _pair(grid, name) -> Grid:
    if (not isinstance(grid, (tuple, list, torch.Size)) or len(grid) != 2
            or not all(isinstance(v, int) and v > 0 for v in grid)):
        raise ValueError(f'CrossAttentionProjector: {name} must be (h, w) positive ints, got '
                         f'{grid!r}.')
    return int(grid[0]), int(grid[1])


@MODELS.register_module()
class CrossAttentionProjector(nn.Module):
    """ScaleKD's Cross Attention Projector (Fan et al., NeurIPS 2024).

    A student feature map x (B, Cs, Hs, Ws) (token students: their patch tokens laid on the grid)
    becomes teacher-format tokens (B, Hq*Wq, Ct):

    1. Queries: learnable (an (Ct, Hq, Wq) grid, N(0, 1) like an embedding table) or external
       tokens (B, Hq*Wq, Ct) given to ``forward``; as a map, through Conv1x1(Ct -> Ct) + ReLU.
    2. Student stem: Conv3x3(Cs -> Cs, stride 1, pad 1) + norm (BatchNorm, or a channel
       LayerNorm for ConvNeXt students) + ReLU, plus a learnable absolute position embedding
       (1, Cs, Hs, Ws) (trunc-normal, std 0.02): keys/values (B, Hs*Ws, Cs). No downsampling.
    3. Multi-head cross attention: q = Linear(Ct -> Ct)(queries), k, v = Linear(Cs -> Ct)(keys),
       ``softmax(q k^T * d^-0.5 * softmax_scale) v`` per head (d = Ct / heads), then
       Linear(Ct -> Ct).
    4. y = LayerNorm(out); y = y + W2 ReLU(W1 y), W1: Ct -> 4 Ct, W2: 4 Ct -> Ct (the residual
       is taken from the normalised tensor).

    The query grid sets the output grid, so any student grid maps onto any teacher grid. The
    construction sizes come from the distiller's dry run (losses fill them; configs hold no channel
    numbers). At another input size the position embedding and the learnable queries are resized
    to the actual grids (bicubic).

    Args:
        in_dims (int): Cs, student channels.
        out_dims (int): Ct, teacher channels.
        in_grid (tuple[int]): (Hs, Ws), the student grid at construction (position embedding).
        query_grid (tuple[int]): (Hq, Wq), the teacher grid at construction (learnable queries).
        num_heads (int, optional): attention heads; must divide ``out_dims``. Defaults to None:
            :func:`default_num_heads` (768 -> 16, 1536 -> 24).
        softmax_scale (float): extra sharpening of the attention logits. Defaults to 1.0.
        learnable_queries (bool): own a learnable query grid; False: ``forward`` must be given
            queries (ScaleKD's last-stage CAPs take the proxy path's outputs). Defaults to True.
        stem_norm (str): 'BN' (BatchNorm2d) or 'LN' (LayerNorm over channels at each position,
            ConvNeXt students). Defaults to 'BN'.
        mlp_ratio (int): hidden width of the residual MLP over ``out_dims``. Defaults to 4.
        interpolate_mode (str): how the position embedding and learnable queries are resized to
            other grids. Defaults to 'bicubic'.

    Forward:
        x: a map (B, Cs, Hs, Ws), ``(tokens, (h, w))``, or tokens (B, E + N, Cs) with ``grid`` and
            ``num_extra`` (see :func:`mmkd_ext.utils.tokens.feature_map`).
        queries (Tensor, optional): (B, Nq, Ct) external query tokens. Defaults to None (the
            learnable ones).
        query_grid (tuple[int], optional): (Hq, Wq) of the output. Defaults to the construction
            ``query_grid`` (required when it does not fit ``Nq`` external queries).
        grid, num_extra: for token inputs, as in ``feature_map``.
        Returns (B, Hq*Wq, Ct) tokens, row-major on the query grid.
    """
    STEM_NORMS = ('BN', 'LN')

    def __init__(self,
                 in_dims: int,
                 out_dims: int,
                 in_grid: Sequence[int],
                 query_grid: Sequence[int],
                 num_heads: Optional[int] = None,
                 softmax_scale: float = 1.0,
                 learnable_queries: bool = True,
                 stem_norm: str = 'BN',
                 mlp_ratio: int = 4,
                 interpolate_mode: str = 'bicubic'):
        super().__init__()
        if stem_norm not in self.STEM_NORMS:
            raise ValueError(f"CrossAttentionProjector: stem_norm must be 'BN' (BatchNorm) or "
                             f"'LN' (channel LayerNorm, for ConvNeXt students), got "
                             f'{stem_norm!r}.')
        num_heads = num_heads or default_num_heads(out_dims)
        if out_dims % num_heads:
            raise ValueError(f'CrossAttentionProjector: num_heads={num_heads} does not divide the '
                             f'{out_dims} output channels.')
        self.in_dims, self.out_dims = int(in_dims), int(out_dims)
        self.in_grid = _pair(tuple(in_grid), 'in_grid')
        self.query_grid = _pair(tuple(query_grid), 'query_grid')
        self.num_heads, self.softmax_scale = num_heads, float(softmax_scale)
        self.interpolate_mode = interpolate_mode
        cs, ct = self.in_dims, self.out_dims

        if learnable_queries:
            self.queries = nn.Parameter(torch.randn(1, ct, *self.query_grid))
        else:
            self.register_parameter('queries', None)
        self.query_proj = nn.Sequential(nn.Conv2d(ct, ct, 1), nn.ReLU())
        if stem_norm == 'BN':
            norm = nn.BatchNorm2d(cs)
        else:
            from mmpretrain.models.utils import LayerNorm2d
            norm = LayerNorm2d(cs)
        self.stem = nn.Sequential(nn.Conv2d(cs, cs, 3, stride=1, padding=1), norm, nn.ReLU())
        self.pos_embed = nn.Parameter(torch.zeros(1, cs, *self.in_grid))
        trunc_normal_(self.pos_embed, std=0.02)
        self.q = nn.Linear(ct, ct)
        self.k = nn.Linear(cs, ct)
        self.v = nn.Linear(cs, ct)
        self.proj = nn.Linear(ct, ct)
        self.norm = nn.LayerNorm(ct)
        self.mlp = nn.Sequential(
            nn.Linear(ct, mlp_ratio * ct), nn.ReLU(), nn.Linear(mlp_ratio * ct, ct))

    def _resized(self, grid_param: torch.Tensor, size: Grid) -> torch.Tensor:
        """A (1, C, h0, w0) parameter grid at ``size`` (itself when it already fits)."""
        if tuple(grid_param.shape[-2:]) == tuple(size):
            return grid_param
        return F.interpolate(
            grid_param, size=tuple(size), mode=self.interpolate_mode, align_corners=False)

    def _query_map(self, batch: int, queries, query_grid) -> torch.Tensor:
        if queries is None:
            if self.queries is None:
                raise ValueError('CrossAttentionProjector was built with learnable_queries=False: '
                                 'pass the query tokens (B, Nq, Ct) to forward.')
            grid = _pair(tuple(query_grid), 'query_grid') if query_grid else self.query_grid
            return self._resized(self.queries, grid).expand(batch, -1, -1, -1)
        if queries.dim() != 3 or queries.shape[0] != batch or queries.shape[2] != self.out_dims:
            raise ValueError(f'CrossAttentionProjector: queries must be (B={batch}, Nq, '
                             f'{self.out_dims}) tokens, got {tuple(queries.shape)}.')
        if query_grid is None:
            if queries.shape[1] != self.query_grid[0] * self.query_grid[1]:
                raise ValueError(
                    f'CrossAttentionProjector: {queries.shape[1]} query tokens do not fill the '
                    f'construction grid {self.query_grid}; pass their query_grid=(h, w).')
            query_grid = self.query_grid
        return tokens_to_map(queries, _pair(tuple(query_grid), 'query_grid'))

    def forward(self,
                x,
                queries: Optional[torch.Tensor] = None,
                query_grid: Optional[Sequence[int]] = None,
                grid: Optional[Sequence[int]] = None,
                num_extra: int = 0) -> torch.Tensor:
        fmap = feature_map(x, num_extra, grid)  # (B, Cs, Hs, Ws)
        if fmap.shape[1] != self.in_dims:
            raise ValueError(f'CrossAttentionProjector expects {self.in_dims} student channels, '
                             f'got a feature of shape {tuple(fmap.shape)}.')
        b = fmap.shape[0]
        q_map = self.query_proj(self._query_map(b, queries, query_grid).to(fmap.dtype))
        q_tokens = map_to_tokens(q_map)  # (B, Nq, Ct)
        s = self.stem(fmap) + self._resized(self.pos_embed, fmap.shape[-2:])
        kv = map_to_tokens(s)  # (B, Hs*Ws, Cs)

        heads, d = self.num_heads, self.out_dims // self.num_heads

        def split(t):  # (B, N, Ct) -> (B, heads, N, d)
            return t.reshape(b, t.shape[1], heads, d).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.q(q_tokens)),
            split(self.k(kv)),
            split(self.v(kv)),
            scale=d**-0.5 * self.softmax_scale)
        out = self.proj(out.transpose(1, 2).reshape(b, -1, self.out_dims))
        y = self.norm(out)
        return y + self.mlp(y)

    def extra_repr(self) -> str:
        return (f'{self.in_dims}@{self.in_grid[0]}x{self.in_grid[1]} -> '
                f'{self.out_dims}@{self.query_grid[0]}x{self.query_grid[1]}, '
                f'heads={self.num_heads}, softmax_scale={self.softmax_scale}, '
                f'learnable_queries={self.queries is not None}')
