"""A simple feature pyramid for plain (single-scale) ViT backbones in detection (ViTDet's idea).

mmdet 3.3 ships this neck only in its ``projects/ViTDet`` folder, which ``pip install mmdet`` does
not install; this is our own implementation, registered as ``mmkd_ext.SimpleFeaturePyramid``.
"""
from typing import Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from mmkd_ext.registry import MODELS


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a map (B, C, H, W) -> (B, C, H, W).

    Args:
        channels (int): C.
        eps (float): added to the variance. Defaults to 1e-6.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def _rescale(channels: int, factor: float) -> Tuple[nn.Module, int]:
    """Layers that resize a map by ``factor`` (4, 2, 1, 0.5) and the channels they output."""
    if factor == 4.0:
        half = channels // 2
        return nn.Sequential(
            nn.ConvTranspose2d(channels, half, 2, stride=2), ChannelLayerNorm(half), nn.GELU(),
            nn.ConvTranspose2d(half, half // 2, 2, stride=2)), half // 2
    if factor == 2.0:
        return nn.ConvTranspose2d(channels, channels // 2, 2, stride=2), channels // 2
    if factor == 1.0:
        return nn.Identity(), channels
    if factor == 0.5:
        return nn.MaxPool2d(2, stride=2), channels
    raise ValueError(f'SimpleFeaturePyramid: scale factors must be among 4.0, 2.0, 1.0 and 0.5 '
                     f'(ViTDet\'s strides 4 to 32 from a stride-16 map), got {factor!r}.')


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """Feature maps at several strides from the last map of a plain backbone (ViT, DeiT).

    The stride-16 map is up-sampled by transposed 2x2 convolutions (x4: two of them with a channel
    LayerNorm and GELU between), kept, or max-pooled (x0.5); each result then goes through a 1x1
    and a 3x3 convolution, each followed by a channel LayerNorm, to ``out_channels``. Extra outputs
    beyond the scale factors are max-pooled with kernel 1 and stride 2 from the last level, as
    mmdet's FPN does without extra convolutions (P6 of Mask R-CNN's RPN).

    Args:
        in_channels (int): channels C of the backbone's map (768 for ViT-B, 384 for DeiT-S).
        out_channels (int): channels of every output level. Defaults to 256.
        scale_factors (Sequence[float]): resize factor of each level relative to the input map.
            Defaults to (4.0, 2.0, 1.0, 0.5) (strides 4, 8, 16, 32 from a stride-16 map).
        num_outs (int): number of outputs, at least ``len(scale_factors)``. Defaults to 5.
        init_cfg (dict | list[dict], optional): MMEngine init config. Defaults to Xavier-uniform
            convolutions (as mmdet's FPN).

    Inputs: a tuple/list of maps (B, C, H, W) (the last one is used) or one map.
    Returns: tuple of ``num_outs`` maps (B, out_channels, H * f, W * f), finest first.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int = 256,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 num_outs: int = 5,
                 init_cfg: Union[dict, list, None] = dict(
                     type='Xavier', layer='Conv2d', distribution='uniform')):
        super().__init__(init_cfg=init_cfg)
        if not isinstance(in_channels, int):
            raise TypeError(f'SimpleFeaturePyramid takes one map: in_channels must be an int (the '
                            f'backbone width), got {in_channels!r}.')
        if num_outs < len(scale_factors):
            raise ValueError(f'SimpleFeaturePyramid: num_outs ({num_outs}) is smaller than the '
                             f'number of scale factors ({len(scale_factors)}).')
        self.scale_factors = tuple(float(f) for f in scale_factors)
        self.num_outs = num_outs
        self.rescales = nn.ModuleList()
        self.lateral_convs = nn.ModuleList()
        self.output_convs = nn.ModuleList()
        for factor in self.scale_factors:
            rescale, channels = _rescale(in_channels, factor)
            self.rescales.append(rescale)
            self.lateral_convs.append(
                nn.Sequential(
                    nn.Conv2d(channels, out_channels, 1, bias=False),
                    ChannelLayerNorm(out_channels)))
            self.output_convs.append(
                nn.Sequential(
                    nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                    ChannelLayerNorm(out_channels)))

    def forward(self, inputs) -> Tuple[torch.Tensor, ...]:
        x = inputs[-1] if isinstance(inputs, (tuple, list)) else inputs
        if x.dim() != 4:
            raise ValueError(f'SimpleFeaturePyramid expects a map (B, C, H, W), got shape '
                             f"{tuple(x.shape)}: build the ViT with out_type='featmap'.")
        outs = [
            out(lateral(rescale(x)))
            for rescale, lateral, out in zip(self.rescales, self.lateral_convs, self.output_convs)
        ]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)
