"""ResMLP (Touvron et al., 2021): patches mixed by a linear layer across patches and an MLP across
channels, with affine pre-normalisation and layer scale. mmpretrain has no ResMLP; OFA and PAT use
ResMLP-S12 as a CIFAR-100 student."""
import math
import re
from typing import Dict, Sequence, Union

import torch
import torch.nn as nn
from mmcv.cnn.bricks.drop import build_dropout
from mmcv.cnn.bricks.transformer import PatchEmbed
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.backbones.base_backbone import BaseBackbone

from mmkd_ext.registry import MODELS


class Affine(nn.Module):
    """``alpha * x + beta`` per channel: ResMLP's normalisation (no statistics).

    The parameters have shape (1, 1, C), as in the released checkpoints (so they also take weight
    decay like there, where only 1-D parameters are exempt).

    Args:
        dims (int): channels C.

    Shapes: (B, N, C) -> (B, N, C).
    """

    def __init__(self, dims: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, 1, dims))
        self.beta = nn.Parameter(torch.zeros(1, 1, dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta, self.alpha, x)


class ResMLPBlock(BaseModule):
    """One ResMLP layer on (B, N, C) tokens:

    ``x = x + g1 * (W_tok (Aff1(x))^T)^T`` (a linear layer over the N patches, shared by channels),
    then ``x = x + g2 * MLP(Aff2(x))`` (Linear(C, r C) - GELU - Linear(r C, C) per patch);
    g1, g2 are per-channel layer scales.

    Args:
        dims (int): channels C.
        num_patches (int): tokens N (fixed by the input size).
        mlp_ratio (float): r. Defaults to 4.
        layer_scale_init (float): initial g1, g2. Defaults to 1e-4 (ResMLP-12/24; 1e-5 for 36).
        drop_path_rate (float): stochastic depth of both branches. Defaults to 0.
    """

    def __init__(self,
                 dims: int,
                 num_patches: int,
                 mlp_ratio: float = 4.,
                 layer_scale_init: float = 1e-4,
                 drop_path_rate: float = 0.,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        hidden = int(dims * mlp_ratio)
        self.norm1 = Affine(dims)
        self.token_mixing = nn.Linear(num_patches, num_patches)
        self.norm2 = Affine(dims)
        self.channel_mlp = nn.Sequential(
            nn.Linear(dims, hidden), nn.GELU(), nn.Linear(hidden, dims))
        self.gamma1 = nn.Parameter(layer_scale_init * torch.ones(dims))
        self.gamma2 = nn.Parameter(layer_scale_init * torch.ones(dims))
        self.drop_path = build_dropout(dict(
            type='DropPath', drop_prob=drop_path_rate)) if drop_path_rate > 0 else None

    def _drop(self, x):
        return x if self.drop_path is None else self.drop_path(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.token_mixing(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        x = x + self._drop(self.gamma1 * mixed)
        return x + self._drop(self.gamma2 * self.channel_mlp(self.norm2(x)))


@MODELS.register_module()
class ResMLP(BaseBackbone):
    """ResMLP backbone (arXiv 2105.03404) for mmpretrain classifiers.

    A ``patch_size`` convolution embeds the image into N = (H / p) x (W / p) tokens of width C,
    ``depth`` :class:`ResMLPBlock` layers follow, and a final :class:`Affine` normalises the last
    layer's output. The cross-patch linear layer fixes N: the input size must be ``img_size``.

    Args:
        arch (str | dict): 's12' / 's24' / 's36' / 'b24', or a dict with ``embed_dims``,
            ``num_layers`` and optionally ``layer_scale_init``. Defaults to 's12'.
        img_size (int | tuple): input size. Defaults to 224.
        patch_size (int): patch side p. Defaults to 16.
        in_channels (int): image channels. Defaults to 3.
        mlp_ratio (float): hidden width of the channel MLP over C. Defaults to 4.
        drop_path_rate (float): stochastic depth, the same in every layer (as timm's ResMLP).
            Defaults to 0.
        out_indices (int | Sequence[int]): layers whose outputs are returned (-1: the last).
            Defaults to -1.
        final_norm (bool): apply the final Affine to the last layer's output. Defaults to True.
        init_cfg (dict, optional): MMEngine init config; None uses the ResMLP initialisation.
            Defaults to None.

    Shapes: (B, in_channels, H, W) -> tuple of (B, C, H / p, W / p) maps, one per out index.
    Taps: ``backbone.layers.i`` give tokens (B, N, C) (no class token), ``backbone.patch_embed``
    gives (tokens, (h, w)).
    """
    arch_zoo = {
        's12': dict(embed_dims=384, num_layers=12, layer_scale_init=1e-4),
        's24': dict(embed_dims=384, num_layers=24, layer_scale_init=1e-5),
        's36': dict(embed_dims=384, num_layers=36, layer_scale_init=1e-6),
        'b24': dict(embed_dims=768, num_layers=24, layer_scale_init=1e-6),
    }

    def __init__(self,
                 arch: Union[str, dict] = 's12',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 mlp_ratio: float = 4.,
                 drop_path_rate: float = 0.,
                 out_indices: Union[int, Sequence[int]] = -1,
                 final_norm: bool = True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, str):
            if arch.lower() not in self.arch_zoo:
                raise KeyError(f'ResMLP arch {arch!r} is not one of {sorted(self.arch_zoo)}; give '
                               f'a dict(embed_dims=..., num_layers=...) for another size.')
            arch = self.arch_zoo[arch.lower()]
        missing = {'embed_dims', 'num_layers'} - set(arch)
        if missing:
            raise KeyError(f'ResMLP arch dict lacks {sorted(missing)}, got {arch}.')
        self.embed_dims, self.num_layers = arch['embed_dims'], arch['num_layers']
        layer_scale_init = arch.get('layer_scale_init', 1e-4)
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if any(s % patch_size for s in self.img_size):
            raise ValueError(f'ResMLP img_size {self.img_size} is not a multiple of patch_size '
                             f'{patch_size}.')
        self.patch_grid = tuple(s // patch_size for s in self.img_size)
        num_patches = self.patch_grid[0] * self.patch_grid[1]
        self.patch_embed = PatchEmbed(
            in_channels=in_channels,
            embed_dims=self.embed_dims,
            conv_type='Conv2d',
            kernel_size=patch_size,
            stride=patch_size,
            input_size=self.img_size,
            norm_cfg=None)
        self.layers = nn.ModuleList([
            ResMLPBlock(self.embed_dims, num_patches, mlp_ratio, layer_scale_init, drop_path_rate)
            for _ in range(self.num_layers)
        ])
        self.final_norm = final_norm
        self.norm = Affine(self.embed_dims) if final_norm else None
        out_indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
        self.out_indices = []
        for i in out_indices:
            index = i + self.num_layers if i < 0 else i
            if not 0 <= index < self.num_layers:
                raise ValueError(f'ResMLP out index {i} is outside 0..{self.num_layers - 1}.')
            self.out_indices.append(index)

    def init_weights(self):
        """ResMLP's initialisation (when no init_cfg is given): Xavier-uniform linear layers with
        zero biases (the channel-MLP biases N(0, 1e-6)), LeCun-normal patch embedding."""
        super().init_weights()
        if self.init_cfg is not None:
            return
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if 'channel_mlp' in name:
                    nn.init.normal_(m.bias, std=1e-6)
                else:
                    nn.init.zeros_(m.bias)
        conv = self.patch_embed.projection
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        # LeCun normal: truncated normal with variance 1 / fan_in (corrected for the truncation).
        trunc_normal_(conv.weight, std=math.sqrt(1.0 / fan_in) / .87962566103423978)
        nn.init.zeros_(conv.bias)

    def train(self, mode: bool = True):
        # mmpretrain's BaseBackbone.train returns None; nn.Module's contract is to return self.
        super().train(mode)
        return self

    def forward(self, x: torch.Tensor):
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f'ResMLP was built for {self.img_size} inputs (its cross-patch layers '
                             f'have {self.patch_grid[0] * self.patch_grid[1]} patches), got '
                             f'{tuple(x.shape[-2:])}; set img_size to the input size.')
        x, (h, w) = self.patch_embed(x)
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.out_indices:
                out = self.norm(x) if (i == self.num_layers - 1 and self.norm is not None) else x
                outs.append(out.transpose(1, 2).reshape(x.shape[0], self.embed_dims, h, w))
        return tuple(outs)


# timm (and the ResMLP release, remapped by timm) -> ours, for ImageClassifier(backbone=ResMLP,
# neck=GlobalAveragePooling, head=LinearClsHead).
_RESMLP_KEYS = [
    (r'^stem\.proj\.', 'backbone.patch_embed.projection.'),
    (r'^blocks\.(\d+)\.norm1\.', r'backbone.layers.\1.norm1.'),
    (r'^blocks\.(\d+)\.norm2\.', r'backbone.layers.\1.norm2.'),
    (r'^blocks\.(\d+)\.linear_tokens\.', r'backbone.layers.\1.token_mixing.'),
    (r'^blocks\.(\d+)\.mlp_channels\.fc1\.', r'backbone.layers.\1.channel_mlp.0.'),
    (r'^blocks\.(\d+)\.mlp_channels\.fc2\.', r'backbone.layers.\1.channel_mlp.2.'),
    (r'^blocks\.(\d+)\.ls1$', r'backbone.layers.\1.gamma1'),
    (r'^blocks\.(\d+)\.ls2$', r'backbone.layers.\1.gamma2'),
    (r'^norm\.', 'backbone.norm.'),
    (r'^head\.', 'head.fc.'),
]


def convert_timm_resmlp(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map a timm ResMLP state dict (``stem.proj``, ``blocks.i.linear_tokens``,
    ``blocks.i.mlp_channels.fc1/fc2``, ``blocks.i.ls1/ls2``, Affine ``norm1/norm2/norm``
    ``alpha/beta``, ``head``) onto ``ImageClassifier(backbone=mmkd_ext.ResMLP,
    head=LinearClsHead)`` keys. Tensors keep their values; Affine parameters are reshaped to
    (1, 1, C) (timm before 0.5 stored them as (C,)).

    A ``module.`` prefix is stripped; a key the mapping does not know is an error.
    """
    out = {}
    for key, value in state_dict.items():
        key = key[len('module.'):] if key.startswith('module.') else key
        for pattern, repl in _RESMLP_KEYS:
            new = re.sub(pattern, repl, key)
            if new != key:
                break
        else:
            raise KeyError(f'convert_timm_resmlp: unknown timm ResMLP key {key!r}')
        if new.endswith('.alpha') or new.endswith('.beta'):
            value = value.reshape(1, 1, -1)
        out[new] = value
    return out
