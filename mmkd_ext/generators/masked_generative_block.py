"""The generative block of ViTKD's deep-layer generation and of MGD, with its Table 7 variants."""
from typing import Optional

import torch
import torch.nn as nn

from mmkd_ext.registry import MODELS
from mmkd_ext.utils.tokens import map_to_tokens, sincos_pos_embed, tokens_to_map


@MODELS.register_module()
class MaskedGenerativeBlock(nn.Module):
    """Generate a (B, C, h, w) map from a masked (B, C, h, w) map; output has the input's shape.

    Variants (ViTKD, Table 7):

    - ``'conv'`` (the method): Conv3x3(C, C) -> ReLU -> Conv3x3(C, C), padding 1.
    - ``'self_attention'``: one pre-norm transformer block (multi-head self-attention over all h*w
      tokens, then an MLP), residual.
    - ``'cross_attention'``: one pre-norm block whose queries are all tokens and whose keys/values
      are the visible (unmasked) tokens only, then an MLP, residual.

    The attention variants add a fixed 2-D sine-cosine position embedding to their input: a mask
    token carries no position, and without one every masked token would be generated alike (the
    convolution has its position from the grid).

    Args:
        channels: C (the teacher's width; the student is projected to it first).
        variant: 'conv', 'self_attention' or 'cross_attention'.
        num_heads: attention heads (default: C // 64, at least 1, a divisor of C).
        mlp_ratio: hidden width of the attention variants' MLP, times C.
    """
    VARIANTS = ('conv', 'self_attention', 'cross_attention')

    def __init__(self,
                 channels: int,
                 variant: str = 'conv',
                 num_heads: Optional[int] = None,
                 mlp_ratio: float = 4.0):
        super().__init__()
        if variant not in self.VARIANTS:
            raise ValueError(f'MaskedGenerativeBlock variant must be one of {self.VARIANTS}, '
                             f'got {variant!r}.')
        self.channels, self.variant = channels, variant
        if variant == 'conv':
            self.generation = nn.Sequential(
                nn.Conv2d(channels, channels, kernel_size=3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(channels, channels, kernel_size=3, padding=1))
            return
        heads = num_heads or max(channels // 64, 1)
        while channels % heads:
            heads -= 1
        self.norm1 = nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(channels)
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, C, h, w) masked features; mask: (B, h*w) bool, True where a token was masked
        (used by 'cross_attention' only; None = all visible). Returns (B, C, h, w)."""
        if self.variant == 'conv':
            return self.generation(x)
        grid = tuple(x.shape[-2:])
        tokens = map_to_tokens(x)
        tokens = tokens + sincos_pos_embed(grid, self.channels, x.device, x.dtype)
        q = self.norm1(tokens)
        if self.variant == 'self_attention':
            attended = self.attn(q, q, q, need_weights=False)[0]
        else:
            hidden = None
            if mask is not None:
                hidden = mask.bool()
                # A sample with every token masked would attend to nothing (NaN): let it see all.
                hidden = hidden & ~hidden.all(dim=1, keepdim=True)
            attended = self.attn(q, q, q, key_padding_mask=hidden, need_weights=False)[0]
        tokens = tokens + attended
        tokens = tokens + self.mlp(self.norm2(tokens))
        return tokens_to_map(tokens, grid)

    def extra_repr(self) -> str:
        return f'channels={self.channels}, variant={self.variant!r}'
