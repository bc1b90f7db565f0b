"""OFA's exit branches (Hao et al., NeurIPS 2023): a small classifier on an intermediate student
stage that projects its features into the logit space, where architecture-specific information no
longer matters. Used during training only (never part of the exported student)."""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.backbones.vision_transformer import TransformerEncoderLayer

from mmkd_ext.registry import MODELS


class SeparableDownBlock(nn.Sequential):
    """Two depthwise-separable 3x3 convolutions, the first with stride 2 (OFA's ``SepConv``):
    dw3x3/2 - pw1x1 - BN - ReLU - dw3x3 - pw1x1 (in -> out) - BN - ReLU.

    Shapes: (B, C_in, H, W) -> (B, C_out, ceil(H / 2), ceil(W / 2)).
    """

    def __init__(self, in_channels: int, out_channels: int):
        c = in_channels
        super().__init__(
            nn.Conv2d(c, c, 3, stride=2, padding=1, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, c, 3, stride=1, padding=1, groups=c, bias=False),
            nn.Conv2d(c, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU())


class PatchMerging2x2(nn.Module):
    """Concatenate each 2x2 neighbourhood of patch tokens (4C), LayerNorm, Linear to ``out_dims``
    without bias, then ``act`` (Swin's patch merging, with an output width of choice). An odd grid
    is padded with zeros on the bottom/right.

    Shapes: (B, h*w, C) on ``grid`` -> (B, ceil(h/2)*ceil(w/2), out_dims).
    """

    def __init__(self, in_dims: int, out_dims: int, act: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(4 * in_dims)
        self.reduction = nn.Linear(4 * in_dims, out_dims, bias=False)
        self.act = nn.GELU() if act else nn.Identity()

    def forward(self, x: torch.Tensor, grid: Tuple[int, int]):
        b, n, c = x.shape
        h, w = grid
        x = x.reshape(b, h, w, c)
        if h % 2 or w % 2:
            x = nn.functional.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        # The order of the four neighbours is that of the reference code (x00, x10, x01, x11).
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        grid = (x.shape[1], x.shape[2])
        x = self.act(self.reduction(self.norm(x.reshape(b, -1, 4 * c))))
        return x, grid


@MODELS.register_module()
class OFAExitBranch(nn.Module):
    """An exit branch for student stage ``stage`` (1-based, of ``num_stages``): stage features ->
    class logits. The kind follows the tap shape:

    - a map (C, H, W) (CNN students): ``num_stages - stage`` :class:`SeparableDownBlock` s, each
      halving the resolution and doubling the channels, the last one to ``out_dims``; the last
      stage instead gets a 1x1 convolution to ``out_dims``; then global average pooling and a
      Linear classifier. ``out_dims`` = max(C_student_final, C_teacher_final) (set by the loss).
    - tokens (E + N, D) (ViT/DeiT with E extra tokens, Swin, MLP students): patch merging of the N
      tokens on ``grid`` down to ``final_grid`` (the first merge to ``out_dims``, the student's
      final width; no merge when the grid is already that small, then a Linear to ``out_dims``
      when the widths differ), ``max(num_stages - stage, 1)`` pre-norm transformer blocks
      (``num_heads`` heads, MLP ratio 4, no qkv bias) over extra + patch tokens, then the first
      extra (class) token, or the mean of the patch tokens when there is none, and a Linear
      classifier.

    Args:
        in_shape (tuple): the tap's shape without batch: (C, H, W) or (E + N, D).
        stage (int): 1-based stage index.
        num_classes (int): classes of the teacher's logits.
        out_dims (int): branch width (see above).
        num_stages (int): stages of the student. Defaults to 4.
        num_extra (int): extra tokens leading token sequences. Defaults to 0.
        grid (tuple, optional): (h, w) of the N patch tokens; required for tokens.
            Defaults to None.
        final_grid (int): merge tokens until the grid side is at most this. Defaults to 7.
        num_heads (int): heads of the transformer blocks. Defaults to 4.

    Shapes: (B, C, H, W) or (B, E + N, D) -> (B, num_classes).
    """

    def __init__(self,
                 in_shape: Sequence[int],
                 stage: int,
                 num_classes: int,
                 out_dims: int,
                 num_stages: int = 4,
                 num_extra: int = 0,
                 grid: Optional[Sequence[int]] = None,
                 final_grid: int = 7,
                 num_heads: int = 4):
        super().__init__()
        in_shape = tuple(in_shape)
        if not 1 <= stage <= num_stages:
            raise ValueError(f'OFAExitBranch stage {stage} is outside 1..{num_stages}.')
        self.in_shape, self.stage, self.num_extra = in_shape, stage, num_extra
        if len(in_shape) == 3:
            self.kind = 'map'
            self._build_map_branch(in_shape[0], out_dims, num_stages - stage)
        elif len(in_shape) == 2:
            self.kind = 'tokens'
            if grid is None:
                raise ValueError('OFAExitBranch on tokens needs the patch grid (h, w).')
            self._build_token_branch(in_shape, tuple(grid), out_dims, num_stages, final_grid,
                                     num_heads)
        else:
            raise ValueError(f'OFAExitBranch takes a (C, H, W) map or (N, D) tokens, got a tap '
                             f'of shape {in_shape}.')
        self.fc = nn.Linear(out_dims, num_classes)
        self._init_weights()

    def _build_map_branch(self, channels, out_dims, num_down):
        blocks = []
        for i in range(num_down):
            out = out_dims if i == num_down - 1 else 2 * channels
            blocks.append(SeparableDownBlock(channels, out))
            channels *= 2
        self.body = nn.Sequential(*blocks) if blocks else nn.Conv2d(channels, out_dims, 1)

    def _build_token_branch(self, in_shape, grid, out_dims, num_stages, final_grid, num_heads):
        n, dims = in_shape[0] - self.num_extra, in_shape[1]
        if n != grid[0] * grid[1]:
            raise ValueError(f'OFAExitBranch: {in_shape[0]} tokens minus {self.num_extra} extra '
                             f'is {n}, not the {grid[0]}x{grid[1]} grid.')
        if out_dims % num_heads:
            raise ValueError(f'OFAExitBranch: width {out_dims} is not divisible by num_heads '
                             f'{num_heads}.')
        self.grid = grid
        side = min(grid)
        num_merge = max(int(math.log2(side / final_grid)), 0) if side > final_grid else 0
        self.mergers = nn.ModuleList([
            PatchMerging2x2(
                dims if i == 0 else out_dims, out_dims, act=(i == 0 or i != num_merge - 1))
            for i in range(num_merge)
        ])
        # Without a merge nothing changes the width; the blocks run at the student's final width.
        self.token_proj = (
            nn.Linear(dims, out_dims) if dims != out_dims and
            (num_merge == 0 or self.num_extra) else None)
        self.blocks = nn.Sequential(*[
            TransformerEncoderLayer(out_dims, num_heads, 4 * out_dims, qkv_bias=False)
            for _ in range(max(num_stages - self.stage, 1))
        ])

    def _init_weights(self):
        # As the reference code: Kaiming-normal (fan out) convolutions, unit BN, truncated-normal
        # (0.02) linear layers with zero biases.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f'OFAExitBranch (stage {self.stage}) was built for features of '
                             f'shape {self.in_shape}, got {tuple(x.shape[1:])}: the input size '
                             f'differs from the dry run (set the distiller input_shape).')
        if self.kind == 'map':
            return self.fc(self.body(x).mean(dim=(2, 3)))
        extra, tokens = x[:, :self.num_extra], x[:, self.num_extra:]
        grid = self.grid
        for merge in self.mergers:
            tokens, grid = merge(tokens, grid)
        if self.token_proj is not None:
            extra = self.token_proj(extra)
            if not self.mergers:
                tokens = self.token_proj(tokens)
        x = self.blocks(torch.cat([extra, tokens], dim=1) if self.num_extra else tokens)
        feat = x[:, 0] if self.num_extra else x.mean(dim=1)
        return self.fc(feat)

    def extra_repr(self) -> str:
        return f'stage={self.stage}, kind={self.kind}, in_shape={self.in_shape}'
