"""Region-Aware Attention (PAT): student stages -> region tokens -> one self-attention -> the
teacher stages' shapes."""
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmkd_ext.registry import MODELS
from mmkd_ext.utils.tokens import map_to_tokens, tokens_to_map


def sinusoid_positions(num_tokens: int, dims: int) -> torch.Tensor:
    """Fixed 1-D sine-cosine encoding of token positions 0..N-1: (1, N, dims) (even channels sin,
    odd channels cos; frequencies 10000^(-2i/dims))."""
    position = torch.arange(num_tokens, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dims, 2, dtype=torch.float32) * (-math.log(10000.0) / dims))
    enc = torch.zeros(num_tokens, dims)
    enc[:, 0::2] = torch.sin(position * freq)
    enc[:, 1::2] = torch.cos(position * freq)[:, :dims // 2]
    return enc[None]


class _RegionEmbed(nn.Module):
    """A stage map (B, C, H, W) -> g x g region tokens (B, g*g, d): a patch-embedding convolution
    with kernel = stride = p = ceil(H / g) (per axis), after a nearest resize of the map to p * g
    when its size differs (smaller maps are upsampled so every region has at least one pixel)."""

    def __init__(self, channels: int, size: Tuple[int, int], grid: int, dims: int):
        super().__init__()
        self.grid = grid
        self.patch = (math.ceil(size[0] / grid), math.ceil(size[1] / grid))
        self.proj = nn.Conv2d(channels, dims, kernel_size=self.patch, stride=self.patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        target = (self.patch[0] * self.grid, self.patch[1] * self.grid)
        if tuple(x.shape[-2:]) != target:
            x = F.interpolate(x, size=target, mode='nearest')
        return map_to_tokens(self.proj(x))


class _TokenAligner(nn.Module):
    """Region tokens (B, n, d) -> a token teacher's patch tokens (B, L, D): BatchNorm1d + Linear
    over the channels (d -> D), then BatchNorm1d + Linear over the token axis (n -> L).

    Each BatchNorm1d normalises the tensor as it is laid out when its Linear is applied (the
    reference code's order): the first one the n token positions of (B, n, d), the second one the
    D channels of (B, D, n).
    """

    def __init__(self, num_in: int, dims: int, num_out: int, out_dims: int):
        super().__init__()
        self.channels = nn.Sequential(nn.BatchNorm1d(num_in), nn.Linear(dims, out_dims))
        self.tokens = nn.Sequential(nn.BatchNorm1d(out_dims), nn.Linear(num_in, num_out))

    def forward(self, x: torch.Tensor, size=None) -> torch.Tensor:
        x = self.channels(x)  # (B, n, D)
        return self.tokens(x.transpose(1, 2)).transpose(1, 2)  # (B, L, D)


class _MapAligner(nn.Module):
    """Region tokens (B, g*g, d) -> a map teacher's stage (B, C, H, W): laid on the g x g grid,
    nearest-upsampled to (H, W), BatchNorm2d + Conv1x1 (d -> C)."""

    def __init__(self, grid: int, dims: int, out_channels: int, size: Tuple[int, int]):
        super().__init__()
        self.grid, self.size = grid, tuple(size)
        self.proj = nn.Sequential(
            nn.BatchNorm2d(dims), nn.Conv2d(dims, out_channels, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor, size=None) -> torch.Tensor:
        x = tokens_to_map(x, (self.grid, self.grid))
        return self.proj(F.interpolate(x, size=tuple(size or self.size), mode='nearest'))


@MODELS.register_module()
class RegionAwareAttention(nn.Module):
    """PAT's Region-Aware Attention with its per-stage aligners.

    1. Every student stage map ``(B, C_i, H_i, W_i)`` becomes ``g x g`` region tokens of width
       ``d`` (a patch-embedding convolution, kernel = stride = ``ceil(H_i / g)``, on the map
       nearest-resized to a multiple of ``g``).
    2. The tokens of all stages are concatenated, ``(B, S * g * g, d)``, and go through one
       LayerNorm and one multi-head self-attention, ``softmax(q k^T / sqrt(d / heads)) v`` with
       ``q = W_q x + P``, ``[k, v] = W_kv x`` and ``k = k + P``, ``P`` a fixed sine-cosine encoding
       of the TOKEN position (the reference code indexes it by the position in the batch). As in
       the reference there is no residual, output projection or MLP.
    3. The result is split back into ``S`` groups of ``g * g`` tokens, and each group is aligned to
       the shape of its teacher stage: a map teacher stage ``(C, H, W)`` by :class:`_MapAligner`,
       a token teacher stage ``(L, D)`` (patch tokens) by :class:`_TokenAligner`.

    Losses build it at set-up from the dry-run shapes; a config writes at most
    ``raa=dict(type='RegionAwareAttention', grid=4, embed_dims=512, num_heads=8)``.

    Args:
        in_shapes (Sequence[tuple]): per student stage, its map shape ``(C, H, W)`` (batch removed;
            token students are laid on their patch grid first).
        out_shapes (Sequence[tuple]): per stage, the teacher stage's shape: ``(C, H, W)`` for a map,
            ``(L, D)`` for ``L`` patch tokens of width ``D`` (extra tokens excluded).
        grid (int): ``g``, regions per side and stage. Defaults to 4 (64 tokens for 4 stages).
        embed_dims (int): ``d``, the width of the region tokens. Defaults to 512.
        num_heads (int): attention heads; must divide ``embed_dims``. Defaults to 8.

    Shapes (forward): a list of ``S`` maps ``(B, C_i, H_i, W_i)`` -> a list of ``S`` tensors,
    ``(B, C, H, W)`` for map teacher stages (``H, W`` from ``out_sizes`` when given) or
    ``(B, L, D)`` for token teacher stages.
    """

    def __init__(self,
                 in_shapes: Sequence[Sequence[int]],
                 out_shapes: Sequence[Sequence[int]],
                 grid: int = 4,
                 embed_dims: int = 512,
                 num_heads: int = 8):
        super().__init__()
        if len(in_shapes) != len(out_shapes) or not in_shapes:
            raise ValueError(f'RegionAwareAttention needs one teacher shape per student stage, got '
                             f'{len(in_shapes)} student and {len(out_shapes)} teacher stages.')
        if embed_dims % num_heads:
            raise ValueError(f'RegionAwareAttention: num_heads ({num_heads}) must divide '
                             f'embed_dims ({embed_dims}).')
        if grid < 1:
            raise ValueError(f'RegionAwareAttention: grid must be >= 1, got {grid}.')
        self.grid, self.embed_dims, self.num_heads = grid, embed_dims, num_heads
        self.num_stages = len(in_shapes)
        self.tokens_per_stage = grid * grid
        self.embeds = nn.ModuleList()
        for i, shape in enumerate(in_shapes):
            if len(shape) != 3:
                raise ValueError(f'RegionAwareAttention: student stage {i} must be given as a map '
                                 f'shape (C, H, W), got {tuple(shape)}.')
            c, h, w = shape
            self.embeds.append(_RegionEmbed(c, (h, w), grid, embed_dims))
        self.norm = nn.LayerNorm(embed_dims)
        self.to_q = nn.Linear(embed_dims, embed_dims)
        self.to_kv = nn.Linear(embed_dims, 2 * embed_dims)
        num_tokens = self.num_stages * self.tokens_per_stage
        self.register_buffer(
            'pos_enc', sinusoid_positions(num_tokens, embed_dims), persistent=False)
        self.out_kinds = []
        self.aligners = nn.ModuleList()
        for i, shape in enumerate(out_shapes):
            shape = tuple(shape)
            if len(shape) == 3:
                self.out_kinds.append('map')
                self.aligners.append(_MapAligner(grid, embed_dims, shape[0], shape[1:]))
            elif len(shape) == 2:
                self.out_kinds.append('tokens')
                self.aligners.append(
                    _TokenAligner(self.tokens_per_stage, embed_dims, shape[0], shape[1]))
            else:
                raise ValueError(f'RegionAwareAttention: teacher stage {i} must be (C, H, W) or '
                                 f'(L, D), got {shape}.')
        self.init_weights()

    def init_weights(self):
        # As the reference: Kaiming (fan out) for convolutions, truncated normal 0.02 for linears.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def attend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Region tokens of all stages (B, N, d) -> (B, N, d) (LayerNorm + self-attention)."""
        b, n, d = tokens.shape
        x = self.norm(tokens)
        pos = self.pos_enc[:, :n].to(x.dtype)
        q = self.to_q(x) + pos
        k, v = self.to_kv(x).chunk(2, dim=-1)
        k = k + pos
        heads = self.num_heads

        def split(t):  # (B, N, d) -> (B, heads, N, d / heads)
            return t.reshape(b, n, heads, d // heads).transpose(1, 2)

        q, k, v = split(q), split(k), split(v)
        attn = (q @ k.transpose(-2, -1)) * (d // heads)**-0.5
        out = attn.softmax(dim=-1) @ v
        return out.transpose(1, 2).reshape(b, n, d)

    def forward(
            self,
            feats: List[torch.Tensor],
            out_sizes: Optional[Sequence[Optional[Tuple[int, int]]]] = None) -> List[torch.Tensor]:
        if len(feats) != self.num_stages:
            raise ValueError(f'RegionAwareAttention was built for {self.num_stages} stages, got '
                             f'{len(feats)} features.')
        tokens = torch.cat([embed(f) for embed, f in zip(self.embeds, feats)], dim=1)
        mixed = self.attend(tokens).split(self.tokens_per_stage, dim=1)
        out_sizes = out_sizes or [None] * self.num_stages
        return [aligner(t, size) for aligner, t, size in zip(self.aligners, mixed, out_sizes)]
