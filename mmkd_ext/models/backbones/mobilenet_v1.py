"""MobileNet-V1 (Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile
Vision Applications", 2017), the ScaleKD paper's smallest CNN student; mmpretrain has none.

Built here from mmcv's ``ConvModule`` / ``DepthwiseSeparableConvModule`` rather than wrapped from
timm through mmpretrain's ``TIMMBackbone``: a training config then needs no timm at run time, the
stages are real submodules (``backbone.layer3``, ``backbone.layer4``) that distillation taps can
name like a ResNet's, and ``out_indices`` / ``frozen_stages`` / ``norm_eval`` behave as in
mmpretrain's other CNN backbones. timm is used only by the tests (``convert_timm_mobilenet_v1`` maps
timm's ``mobilenetv1_100`` weights onto this module; the tests compare both on the same weights).

Architecture (width multiplier 1.0, 224 px input; every depthwise-separable block is a 3x3
depthwise conv + BN + act, then a 1x1 conv + BN + act; no bias in any conv)::

    stem    3x3 conv, 32, stride 2                      32 @ 112
    layer1  dw 64 s1, dw 128 s2, dw 128 s1              128 @ 56   (C2)
    layer2  dw 256 s2, dw 256 s1                        256 @ 28   (C3)
    layer3  dw 512 s2, 5 x dw 512 s1                    512 @ 14   (C4)
    layer4  dw 1024 s2, dw 1024 s1                      1024 @ 7   (C5)

13 depthwise-separable blocks, 3.2 M parameters without the classifier (4.2 M with a 1000-class
linear head). The stages are cut at the strides, as a ResNet's: layer3 ends with the sixth
512-channel block and layer4 is the two 1024-channel blocks, which are the two features the ScaleKD
reference taps (its C4 and C5: 512 @ 14x14 and 1024 @ 7x7).
"""
import re
from typing import Dict, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule, DepthwiseSeparableConvModule
from mmengine.model import BaseModule
from mmpretrain.models.utils import make_divisible
from torch.nn.modules.batchnorm import _BatchNorm

from mmkd_ext.registry import MODELS

# (output channels, stride) of the depthwise-separable blocks, one list per stage.
ARCH = [
    [(64, 1), (128, 2), (128, 1)],
    [(256, 2), (256, 1)],
    [(512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1)],
    [(1024, 2), (1024, 1)],
]
STEM_CHANNELS = 32


@MODELS.register_module()
class MobileNetV1(BaseModule):
    """MobileNet-V1 backbone (``type='mmkd_ext.MobileNetV1'``).

    Args:
        widen_factor (float): Width multiplier; every channel count is multiplied by it and
            rounded to a multiple of 8 (mmpretrain's ``make_divisible``). Defaults to 1.0.
        in_channels (int): Input image channels. Defaults to 3.
        out_indices (Sequence[int] | int): Stages (0-3: layer1-layer4) whose outputs are returned.
            Defaults to (3, ).
        frozen_stages (int): Stages to freeze (parameters and BN statistics): -1 none, 0 the stem,
            i the stem and layer1..layer i. Defaults to -1.
        norm_cfg (dict): Normalisation layer. Defaults to ``dict(type='BN')``.
        act_cfg (dict): Activation. Defaults to ``dict(type='ReLU')`` (the paper's and the ScaleKD
            reference's; timm's ``mobilenetv1_100`` weights are trained with ReLU6: set
            ``dict(type='ReLU6')`` to use them).
        norm_eval (bool): Keep BN layers in eval mode while training. Defaults to False.
        init_cfg (dict | list[dict], optional): Initialisation. Defaults to Kaiming for convs and
            constant 1 for norms.

    Forward: images (B, in_channels, H, W) -> a tuple with one feature map per ``out_indices``;
    stage i is (B, C_i, H / 2^(i+2), W / 2^(i+2)) (ceil), C = (128, 256, 512, 1024) x widen_factor.
    """

    def __init__(self,
                 widen_factor: float = 1.0,
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = (3, ),
                 frozen_stages: int = -1,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 norm_eval: bool = False,
                 init_cfg=[
                     dict(type='Kaiming', layer='Conv2d'),
                     dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
                 ]):
        super().__init__(init_cfg)
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        num_stages = len(ARCH)
        out_indices = tuple(i + num_stages if i < 0 else i for i in out_indices)
        if not out_indices or any(not 0 <= i < num_stages for i in out_indices):
            raise ValueError(f'MobileNetV1 out_indices must be stage indices in [-{num_stages}, '
                             f'{num_stages - 1}] (0-3: layer1-layer4), got {out_indices}.')
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'MobileNetV1 frozen_stages must be in [-1, {num_stages}], got '
                             f'{frozen_stages}.')
        if widen_factor <= 0:
            raise ValueError(f'MobileNetV1 widen_factor must be positive, got {widen_factor}.')
        self.widen_factor = widen_factor
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        channels = make_divisible(STEM_CHANNELS * widen_factor, 8)
        self.stem = ConvModule(
            in_channels,
            channels,
            3,
            stride=2,
            padding=1,
            bias=False,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg)
        self.out_channels = []
        for i, stage in enumerate(ARCH):
            blocks = []
            for out, stride in stage:
                out = make_divisible(out * widen_factor, 8)
                blocks.append(
                    DepthwiseSeparableConvModule(
                        channels,
                        out,
                        3,
                        stride=stride,
                        padding=1,
                        bias=False,
                        norm_cfg=norm_cfg,
                        act_cfg=act_cfg))
                channels = out
            self.add_module(f'layer{i + 1}', nn.Sequential(*blocks))
            self.out_channels.append(channels)
        self._freeze_stages()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x = self.stem(x)
        outs = []
        for i in range(len(ARCH)):
            x = getattr(self, f'layer{i + 1}')(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def _freeze_stages(self):
        modules = [self.stem] + [getattr(self, f'layer{i + 1}') for i in range(len(ARCH))]
        for m in modules[:self.frozen_stages + 1]:
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self


def _timm_block_order(keys) -> Dict[Tuple[int, int], int]:
    """timm's (stage, block) indices in network order -> running block number 0..12."""
    pairs = sorted({(int(m.group(1)), int(m.group(2)))
                    for m in (re.match(r'^blocks\.(\d+)\.(\d+)\.', k) for k in keys) if m})
    return {pair: n for n, pair in enumerate(pairs)}


def convert_timm_mobilenet_v1(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map a timm ``mobilenetv1_100`` state dict onto
    ``ImageClassifier(backbone=mmkd_ext.MobileNetV1, neck=GlobalAveragePooling,
    head=LinearClsHead)`` keys.

    timm numbers its 13 depthwise-separable blocks by its own stages (``blocks.S.J``, five stages
    cut differently from ours); they are taken in network order and laid onto ``layer1`` (3
    blocks), ``layer2`` (2), ``layer3`` (6), ``layer4`` (2). ``conv_stem`` / ``bn1`` become
    ``backbone.stem.conv`` / ``.bn``; ``conv_dw`` / ``bn1`` and ``conv_pw`` / ``bn2`` of a block
    become ``depthwise_conv.conv`` / ``.bn`` and ``pointwise_conv.conv`` / ``.bn``; ``classifier``
    becomes ``head.fc``. Tensors are unchanged. timm trains its weights with ReLU6: build the
    backbone with ``act_cfg=dict(type='ReLU6')`` for them.

    Args:
        state_dict (dict[str, Tensor]): timm's state dict (a ``module.`` prefix is stripped).

    Returns:
        dict[str, Tensor]: the same tensors under the new keys.

    Raises:
        KeyError: for a key the mapping does not know, or a number of blocks other than 13 (not a
            MobileNet-V1), rather than dropping or misplacing weights silently.
    """
    state_dict = {
        (k[len('module.'):] if k.startswith('module.') else k): v
        for k, v in state_dict.items()
    }
    order = _timm_block_order(state_dict)
    sizes = [len(s) for s in ARCH]
    if len(order) != sum(sizes):
        raise KeyError(f'Expected the {sum(sizes)} depthwise-separable blocks of a MobileNet-V1 '
                       f'(timm keys blocks.S.J.*), found {len(order)}.')
    starts = [sum(sizes[:i]) for i in range(len(sizes))]

    def ours(n):
        stage = max(i for i, s in enumerate(starts) if s <= n)
        return f'backbone.layer{stage + 1}.{n - starts[stage]}'

    inner = {
        'conv_dw.weight': 'depthwise_conv.conv.weight',
        'conv_pw.weight': 'pointwise_conv.conv.weight',
    }
    out = {}
    for key, value in state_dict.items():
        new = None
        m = re.match(r'^blocks\.(\d+)\.(\d+)\.(.+)$', key)
        if m:
            prefix = ours(order[int(m.group(1)), int(m.group(2))])
            rest = m.group(3)
            bn = re.match(r'^bn([12])\.(.+)$', rest)
            if rest in inner:
                new = f'{prefix}.{inner[rest]}'
            elif bn:
                conv = 'depthwise_conv' if bn.group(1) == '1' else 'pointwise_conv'
                new = f'{prefix}.{conv}.bn.{bn.group(2)}'
        elif key == 'conv_stem.weight':
            new = 'backbone.stem.conv.weight'
        elif key.startswith('bn1.'):
            new = 'backbone.stem.bn.' + key[len('bn1.'):]
        elif key in ('classifier.weight', 'classifier.bias'):
            new = 'head.fc.' + key.split('.')[-1]
        if new is None:
            raise KeyError(f'convert_timm_mobilenet_v1: unknown timm key {key!r} (expected '
                           f'conv_stem, bn1, blocks.S.J.(conv_dw|bn1|conv_pw|bn2), classifier).')
        out[new] = value
    return out
