"""timm classifier checkpoints -> mmpretrain ``ImageClassifier`` state dicts, for teachers released
in timm's format (OFA's CIFAR-100 teachers, timm 0.6.5): ViT/DeiT, ConvNeXt, Swin and (mmkd_ext's)
ResMLP. Tensors keep their values; only the keys change (and, for Swin's patch merging, the order
of the concatenated channels)."""
import re
from typing import Callable, Dict, List, Tuple

import torch

from .backbones.resmlp import convert_timm_resmlp

Rules = List[Tuple[str, str]]

# timm VisionTransformer (vit_*, deit_* without distillation token) -> mmpretrain
# VisionTransformer + VisionTransformerClsHead.
_VIT_KEYS: Rules = [
    (r'^cls_token$', 'backbone.cls_token'),
    (r'^pos_embed$', 'backbone.pos_embed'),
    (r'^patch_embed\.proj\.', 'backbone.patch_embed.projection.'),
    (r'^blocks\.(\d+)\.norm1\.', r'backbone.layers.\1.ln1.'),
    (r'^blocks\.(\d+)\.attn\.qkv\.', r'backbone.layers.\1.attn.qkv.'),
    (r'^blocks\.(\d+)\.attn\.proj\.', r'backbone.layers.\1.attn.proj.'),
    (r'^blocks\.(\d+)\.norm2\.', r'backbone.layers.\1.ln2.'),
    (r'^blocks\.(\d+)\.mlp\.fc1\.', r'backbone.layers.\1.ffn.layers.0.0.'),
    (r'^blocks\.(\d+)\.mlp\.fc2\.', r'backbone.layers.\1.ffn.layers.1.'),
    (r'^norm\.', 'backbone.ln1.'),
    (r'^head\.', 'head.layers.head.'),
]

# timm ConvNeXt (0.6 and later: stem, stages.i.downsample, stages.i.blocks.j) -> mmpretrain
# ConvNeXt (out_indices=(3,), gap_before_final_norm) + LinearClsHead.
_CONVNEXT_KEYS: Rules = [
    (r'^stem\.(\d)\.', r'backbone.downsample_layers.0.\1.'),
    (r'^stages\.(\d+)\.downsample\.(\d)\.', r'backbone.downsample_layers.\1.\2.'),
    (r'^stages\.(\d+)\.blocks\.(\d+)\.conv_dw\.', r'backbone.stages.\1.\2.depthwise_conv.'),
    (r'^stages\.(\d+)\.blocks\.(\d+)\.norm\.', r'backbone.stages.\1.\2.norm.'),
    (r'^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.', r'backbone.stages.\1.\2.pointwise_conv1.'),
    (r'^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.', r'backbone.stages.\1.\2.pointwise_conv2.'),
    (r'^stages\.(\d+)\.blocks\.(\d+)\.gamma$', r'backbone.stages.\1.\2.gamma'),
    (r'^head\.norm\.', 'backbone.norm3.'),
    (r'^head\.fc\.', 'head.fc.'),
]

# timm Swin (0.6.5: `layers.i.downsample` ends stage i; >= 0.9: it starts stage i, and the head is
# `head.fc`) -> mmpretrain SwinTransformer (downsample at the end of stage i) + GAP + LinearClsHead.
_SWIN_KEYS: Rules = [
    (r'^patch_embed\.proj\.', 'backbone.patch_embed.projection.'),
    (r'^patch_embed\.norm\.', 'backbone.patch_embed.norm.'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.norm1\.', r'backbone.stages.\1.blocks.\2.norm1.'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.attn\.', r'backbone.stages.\1.blocks.\2.attn.w_msa.'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.norm2\.', r'backbone.stages.\1.blocks.\2.norm2.'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.', r'backbone.stages.\1.blocks.\2.ffn.layers.0.0.'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.', r'backbone.stages.\1.blocks.\2.ffn.layers.1.'),
    (r'^layers\.(\d+)\.downsample\.', r'backbone.stages.\1.downsample.'),
    (r'^norm\.', 'backbone.norm3.'),
    (r'^head\.(fc\.)?', 'head.fc.'),
]
# Buffers both sides compute from the window size (mmpretrain builds its own).
_SWIN_BUFFERS = ('relative_position_index', 'attn_mask')
# timm concatenates the 2x2 neighbours of patch merging as [(0,0), (1,0), (0,1), (1,1)] blocks of C
# channels; mmpretrain's nn.Unfold gives, per channel, (0,0), (0,1), (1,0), (1,1).
_UNFOLD_ORDER = [0, 2, 1, 3]


def _rename(state_dict: Dict[str, torch.Tensor], rules: Rules,
            arch: str) -> Dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        key = key[len('module.'):] if key.startswith('module.') else key
        for pattern, repl in rules:
            new, found = re.subn(pattern, repl, key)
            if found:
                break
        else:
            raise KeyError(f'convert_timm_classifier: unknown timm {arch} key {key!r}')
        out[new] = value
    return out


def convert_timm_vit(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """timm ViT/DeiT keys -> ``ImageClassifier(VisionTransformer, VisionTransformerClsHead)``."""
    return _rename(state_dict, _VIT_KEYS, 'ViT')


def convert_timm_convnext(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """timm ConvNeXt keys -> ``ImageClassifier(ConvNeXt, LinearClsHead)``."""
    return _rename(state_dict, _CONVNEXT_KEYS, 'ConvNeXt')


def convert_timm_swin(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """timm Swin keys (0.6.5 or >= 0.9 layout) -> ``ImageClassifier(SwinTransformer,
    GlobalAveragePooling, LinearClsHead)``; patch-merging weights reordered to mmpretrain's channel
    order; relative-position index and attention-mask buffers dropped."""
    state = {
        k[len('module.'):] if k.startswith('module.') else k: v
        for k, v in state_dict.items() if not k.endswith(_SWIN_BUFFERS)
    }
    if any(re.match(r'^layers\.0\.downsample\.', k) for k in state):
        layout_06 = True  # stage 0 ends with a merge: timm 0.6.5
    else:
        layout_06 = not any(re.match(r'^layers\.\d+\.downsample\.', k) for k in state)
    if not layout_06:  # timm >= 0.9: the merge that starts stage i ends stage i - 1

        def earlier(m):
            return f'layers.{int(m.group(1)) - 1}.downsample.'

        state = {re.sub(r'^layers\.(\d+)\.downsample\.', earlier, k): v for k, v in state.items()}
    out = _rename(state, _SWIN_KEYS, 'Swin')
    for key, value in out.items():
        if '.downsample.' not in key:
            continue
        if key.endswith('reduction.weight'):  # (C_out, 4 C)
            c = value.shape[1] // 4
            out[key] = value.reshape(-1, 4,
                                     c)[:,
                                        _UNFOLD_ORDER].transpose(1,
                                                                 2).reshape(value.shape[0], 4 * c)
        elif key.endswith(('norm.weight', 'norm.bias')):  # (4 C,)
            c = value.shape[0] // 4
            out[key] = value.reshape(4, c)[_UNFOLD_ORDER].t().reshape(4 * c)
    return out


CONVERTERS: Dict[str, Callable] = dict(
    vit=convert_timm_vit,
    convnext=convert_timm_convnext,
    swin=convert_timm_swin,
    resmlp=convert_timm_resmlp)


def convert_timm_classifier(state_dict: Dict[str, torch.Tensor],
                            arch: str) -> Dict[str, torch.Tensor]:
    """Convert a timm state dict of family ``arch`` ('vit', 'convnext', 'swin' or 'resmlp').

    Args:
        state_dict (dict): timm's keys (a ``module.`` prefix is stripped).
        arch (str): the family.

    Returns:
        dict: mmpretrain ``ImageClassifier`` keys (``backbone.``, ``head.``), same tensors.
    """
    if arch not in CONVERTERS:
        raise KeyError(f'No timm converter for {arch!r}; known: {sorted(CONVERTERS)}.')
    return CONVERTERS[arch](state_dict)
