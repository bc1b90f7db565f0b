"""CaiT (Touvron et al., "Going deeper with Image Transformers", ICCV 2021) as an mmpretrain-style
backbone, so that SpectralKD's CaiT-S24 teacher runs inside OpenMMLab without timm.

Architecture (as in the paper):

* a 16x16 patch embedding plus learned position embedding; **no class token in the trunk**;
* ``num_layers`` self-attention blocks over the patch tokens, each with **LayerScale** (a learned
  per-channel scale on both residual branches, initialised to ``init_values``) and **talking-heads
  attention** (linear mixing across heads before and after the softmax);
* ``num_cls_layers`` (2) **class-attention** blocks: only the class token is updated, attending to
  itself and the (frozen after the trunk) patch tokens;
* a final LayerNorm over [cls, patches]; the backbone returns the normalised class token.

Parameter names are ours (mmpretrain-like: ``layers.i.ln1``, ``ffn.fc1``, ``ls1.weight``, final norm
``ln1``); :func:`convert_timm_cait` maps a timm CaiT state dict onto a classifier built with this
backbone and a ``LinearClsHead``.

Feature taps: ``backbone.layers.i`` outputs the patch tokens (B, N, D) (``num_extra_tokens = 0``:
the
class token only exists in ``cls_layers``); ``backbone.patch_embed`` outputs (tokens, (h, w)).
"""
import re
from typing import Dict, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_

from mmkd_ext.registry import MODELS


class LayerScale(nn.Module):
    """x * weight, a learned per-channel scale of a residual branch. (..., D) -> (..., D)."""

    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.weight = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x):
        return x * self.weight


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode). (B, ...) -> (B, ...)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0], ) + (1, ) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class FFN(nn.Module):
    """Linear -> GELU -> Linear. (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class TalkingHeadAttention(nn.Module):
    """Multi-head self-attention whose attention logits and weights are mixed across heads by two
    learned (heads x heads) maps, before (``proj_l``) and after (``proj_w``) the softmax.

    (B, N, D) -> (B, N, D).
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads)**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj_l = nn.Linear(num_heads, num_heads)
        self.proj_w = nn.Linear(num_heads, num_heads)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, N, D = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads) \
            .permute(2, 0, 3, 1, 4)                       # each (B, heads, N, D/heads)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, N, N)
        # Heads are the last dim for the Linear mixing: (B, N, N, heads).
        attn = self.proj_l(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        attn = attn.softmax(dim=-1)
        attn = self.proj_w(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        attn = self.attn_drop(attn)
        x = (attn @ v).transpose(1, 2).reshape(B, N, D)
        return self.proj_drop(self.proj(x))


class ClassAttention(nn.Module):
    """The class token (first token) attends to all tokens; only its update is returned.

    (B, 1 + N, D) -> (B, 1, D).
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads)**-0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, N, D = x.shape
        h = self.num_heads
        q = self.q(x[:, :1]).reshape(B, 1, h, D // h).transpose(1, 2)  # (B, h, 1, D/h)
        k = self.k(x).reshape(B, N, h, D // h).transpose(1, 2)  # (B, h, N, D/h)
        v = self.v(x).reshape(B, N, h, D // h).transpose(1, 2)
        attn = self.attn_drop(((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1))
        x_cls = (attn @ v).transpose(1, 2).reshape(B, 1, D)
        return self.proj_drop(self.proj(x_cls))


class CaiTBlock(nn.Module):
    """Pre-norm block with LayerScale on both branches and talking-heads attention.

    (B, N, D) -> (B, N, D).
    """

    def __init__(self,
                 dim,
                 num_heads,
                 mlp_ratio=4.0,
                 qkv_bias=True,
                 drop=0.0,
                 attn_drop=0.0,
                 drop_path=0.0,
                 init_values=1e-5):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = TalkingHeadAttention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.ls1 = LayerScale(dim, init_values)
        self.ln2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = FFN(dim, int(dim * mlp_ratio), drop)
        self.ls2 = LayerScale(dim, init_values)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path(self.ls1(self.attn(self.ln1(x))))
        return x + self.drop_path(self.ls2(self.ffn(self.ln2(x))))


class CaiTClassBlock(CaiTBlock):
    """Class-attention block: updates the class token from [cls, patch tokens].

    (B, N, D) patch tokens, (B, 1, D) class token -> (B, 1, D) class token.
    """

    def __init__(self,
                 dim,
                 num_heads,
                 mlp_ratio=4.0,
                 qkv_bias=True,
                 drop=0.0,
                 attn_drop=0.0,
                 drop_path=0.0,
                 init_values=1e-5):
        super().__init__(dim, num_heads, mlp_ratio, qkv_bias, drop, attn_drop, drop_path,
                         init_values)
        self.attn = ClassAttention(dim, num_heads, qkv_bias, attn_drop, drop)

    def forward(self, x, cls_token):
        u = torch.cat([cls_token, x], dim=1)
        cls_token = cls_token + self.drop_path(self.ls1(self.attn(self.ln1(u))))
        return cls_token + self.drop_path(self.ls2(self.ffn(self.ln2(cls_token))))


class PatchEmbed(nn.Module):
    """Non-overlapping conv patch embedding. (B, C, H, W) -> ((B, h*w, D), (h, w))."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, img_size: Tuple[int, int]):
        super().__init__()
        self.projection = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.init_out_size = (img_size[0] // patch_size, img_size[1] // patch_size)

    def forward(self, x):
        x = self.projection(x)
        hw = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), hw


@MODELS.register_module()
class CaiT(BaseModule):
    """CaiT backbone (``type='mmkd_ext.CaiT'`` in configs).

    Args:
        arch: a name of :attr:`arch_zoo` ('xxs24', 'xs24', 's24', 's36', 'm36') or a dict with
            ``embed_dims``, ``num_layers``, ``num_heads``, ``init_values`` (and optionally
            ``num_cls_layers``, ``mlp_ratio``).
        img_size: training image size (int or (H, W)); fixes the position embedding's grid.
        patch_size: patch size (16 in the paper).
        in_channels: input image channels.
        drop_path_rate: stochastic depth; CaiT uses the same rate in every trunk block (not a
            linear ramp as DeiT).
        drop_rate, attn_drop_rate: dropout after projections / on attention weights.
        out_type: 'cls_token' -> ``((B, D),)`` the normalised class token (for ``LinearClsHead``);
            'featmap' -> ``((B, D, h, w),)`` the normalised patch tokens as a map.

    Forward: images (B, C, H, W) -> a 1-tuple as above. H, W other than ``img_size`` are allowed
    (the position embedding is resized bicubically, as mmpretrain's ViT does).
    """
    arch_zoo: Dict[str, dict] = {
        'xxs24': dict(embed_dims=192, num_layers=24, num_heads=4, init_values=1e-5),
        'xs24': dict(embed_dims=288, num_layers=24, num_heads=6, init_values=1e-5),
        's24': dict(embed_dims=384, num_layers=24, num_heads=8, init_values=1e-5),
        's36': dict(embed_dims=384, num_layers=36, num_heads=8, init_values=1e-6),
        'm36': dict(embed_dims=768, num_layers=36, num_heads=16, init_values=1e-6),
    }
    num_extra_tokens = 0  # the trunk (``layers``) carries patch tokens only

    def __init__(self,
                 arch: Union[str, dict] = 's24',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 drop_path_rate: float = 0.0,
                 drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0,
                 out_type: str = 'cls_token',
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, str):
            if arch not in self.arch_zoo:
                raise KeyError(f'Unknown CaiT arch {arch!r}; choose from {sorted(self.arch_zoo)} '
                               f'or give a dict.')
            arch = self.arch_zoo[arch]
        arch = dict(arch)
        missing = {'embed_dims', 'num_layers', 'num_heads'} - set(arch)
        if missing:
            raise KeyError(f'CaiT arch dict lacks {sorted(missing)}')
        if out_type not in ('cls_token', 'featmap'):
            raise ValueError(f"out_type must be 'cls_token' or 'featmap', got {out_type!r}")
        dim, heads = arch['embed_dims'], arch['num_heads']
        mlp_ratio = arch.get('mlp_ratio', 4.0)
        init_values = arch.get('init_values', 1e-5)
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)

        self.embed_dims = dim
        self.out_type = out_type
        self.patch_embed = PatchEmbed(in_channels, dim, patch_size, img_size)
        self.patch_resolution = self.patch_embed.init_out_size
        num_patches = self.patch_resolution[0] * self.patch_resolution[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.drop_after_pos = nn.Dropout(drop_rate)
        block_args = dict(
            dim=dim,
            num_heads=heads,
            mlp_ratio=mlp_ratio,
            drop=drop_rate,
            attn_drop=attn_drop_rate,
            drop_path=drop_path_rate,
            init_values=init_values)
        self.layers = nn.ModuleList(CaiTBlock(**block_args) for _ in range(arch['num_layers']))
        # Class attention runs without dropout or drop path, as in the paper's code.
        cls_args = dict(block_args, drop=0.0, attn_drop=0.0, drop_path=0.0)
        self.cls_layers = nn.ModuleList(
            CaiTClassBlock(**cls_args) for _ in range(arch.get('num_cls_layers', 2)))
        self.ln1 = nn.LayerNorm(dim, eps=1e-6)

    def init_weights(self):
        super().init_weights()
        if self.init_cfg is not None and self.init_cfg.get('type') == 'Pretrained':
            return
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _pos_embed(self, hw):
        if tuple(hw) == tuple(self.patch_resolution):
            return self.pos_embed
        # Another input size: resize the grid of position embeddings (bicubic).
        h0, w0 = self.patch_resolution
        grid = self.pos_embed.reshape(1, h0, w0, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=tuple(hw), mode='bicubic', align_corners=False)
        return grid.flatten(2).transpose(1, 2)

    def forward(self, x):
        x, hw = self.patch_embed(x)  # (B, N, D), (h, w)
        x = self.drop_after_pos(x + self._pos_embed(hw))
        for layer in self.layers:
            x = layer(x)  # (B, N, D)
        cls_token = self.cls_token.expand(x.shape[0], -1, -1)
        for layer in self.cls_layers:
            cls_token = layer(x, cls_token)  # (B, 1, D)
        x = self.ln1(torch.cat([cls_token, x], dim=1))
        if self.out_type == 'cls_token':
            return (x[:, 0], )
        B, _, D = x.shape
        return (x[:, 1:].transpose(1, 2).reshape(B, D, *hw), )


# timm CaiT key -> key of an mmpretrain ImageClassifier(backbone=CaiT, head=LinearClsHead).
# Sub-keys inside a block are mapped by _BLOCK_KEYS; unlisted keys are an error.
_TOP_KEYS = [
    (r'^patch_embed\.proj\.', 'backbone.patch_embed.projection.'),
    (r'^pos_embed$', 'backbone.pos_embed'),
    (r'^cls_token$', 'backbone.cls_token'),
    (r'^blocks\.(\d+)\.', r'backbone.layers.\1.'),
    (r'^blocks_token_only\.(\d+)\.', r'backbone.cls_layers.\1.'),
    (r'^norm\.', 'backbone.ln1.'),
    (r'^head\.', 'head.fc.'),
]
_BLOCK_KEYS = [
    (r'\.norm1\.', '.ln1.'),
    (r'\.norm2\.', '.ln2.'),
    (r'\.gamma_1$', '.ls1.weight'),
    (r'\.gamma_2$', '.ls2.weight'),
    (r'\.mlp\.fc([12])\.', r'.ffn.fc\1.'),
    # attn.qkv / attn.proj_l / attn.proj_w / attn.proj / attn.q|k|v keep their names
]


def convert_timm_cait(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map a timm CaiT state dict (``blocks.i.attn.qkv.weight``, ``blocks_token_only.j.attn.q...``,
    ``gamma_1``, ``norm``, ``head``) onto ``ImageClassifier(backbone=mmkd_ext.CaiT,
    head=LinearClsHead)`` keys (``backbone.layers.i.attn.qkv.weight``, ``backbone.cls_layers.j...``,
    ``ls1.weight``, ``backbone.ln1``, ``head.fc``). Tensors are unchanged (same shapes).

    A ``module.`` prefix is stripped; a key the mapping does not know is an error.
    """
    out = {}
    for key, value in state_dict.items():
        key = key[len('module.'):] if key.startswith('module.') else key
        for pattern, repl in _TOP_KEYS:
            new = re.sub(pattern, repl, key)
            if new != key:
                break
        else:
            raise KeyError(f'convert_timm_cait: unknown timm CaiT key {key!r}')
        if '.layers.' in new or '.cls_layers.' in new:
            for pattern, repl in _BLOCK_KEYS:
                new = re.sub(pattern, repl, new)
        out[new] = value
    return out
