"""DeiT III (Touvron et al., "DeiT III: Revenge of the ViT", ECCV 2022) as mmpretrain builds it,
with the encoder layer mmpretrain 1.2.0 gets wrong put right.

mmpretrain 1.2.0's ``DeiT3TransformerEncoderLayer.forward`` feeds the FFN ``ln1(x)`` (the
attention's LayerNorm) instead of ``ln2(x)``: ``ln2`` is loaded from the checkpoint and never
run, so every mmpretrain DeiT3 computes another network than the one its checkpoint was trained as
(mmpretrain's issue tracker reports DeiT3-S at about 35 % top-1). DeiT III's block is the usual
pre-norm block with LayerScale on both branches::

    x = x + ls1 * attn(norm1(x))
    x = x + ls2 * mlp(norm2(x))

:class:`DeiT3` here is mmpretrain's backbone (``type='mmkd_ext.DeiT3'``, same arguments, same
modules, same state-dict keys, so OpenMMLab's published DeiT3 checkpoints load unchanged) whose
layers run :meth:`DeiT3Layer.forward`. Everything else (patch embedding, position embedding added to
the patch tokens before the class token is prepended, final norm, ``out_type``) is mmpretrain's.

:func:`convert_timm_deit3` maps a timm (or the original facebookresearch/deit) DeiT III state dict
onto ``ImageClassifier(backbone=DeiT3, head=VisionTransformerClsHead)`` keys; the tests compare this
backbone with timm's DeiT III on the same random weights.
"""
import re
from typing import Dict

import torch
from mmpretrain.models.backbones.deit3 import DeiT3 as MMPretrainDeiT3
from mmpretrain.models.backbones.deit3 import DeiT3TransformerEncoderLayer

from mmkd_ext.registry import MODELS


class DeiT3Layer(DeiT3TransformerEncoderLayer):
    """mmpretrain's DeiT3 encoder layer with its FFN fed by ``ln2``, as in DeiT III.

    Same submodules and parameters as the parent (``ln1``, ``attn`` with LayerScale ``gamma1``,
    ``ln2``, ``ffn`` with LayerScale ``gamma2``); only the forward differs.

    Forward: tokens (B, N, D) -> (B, N, D).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        # The FFN adds its own residual (identity) after LayerScale and drop path.
        return self.ffn(self.ln2(x), identity=x)


@MODELS.register_module()
class DeiT3(MMPretrainDeiT3):
    """mmpretrain's DeiT3 backbone with correct encoder layers (``type='mmkd_ext.DeiT3'``).

    Takes exactly the arguments of ``mmpretrain.models.backbones.DeiT3`` (``arch`` 's' / 'm' / 'b' /
    'l' / 'h' or a dict, ``img_size``, ``patch_size``, ``out_indices``, ``drop_path_rate``,
    ``out_type``, ...) and has the same state-dict keys. Use it in place of mmpretrain's in a model
    dict: ``backbone=dict(type='mmkd_ext.DeiT3', arch='s', img_size=224, patch_size=16)``.

    Forward: images (B, C, H, W) -> a tuple with one entry per ``out_indices``, shaped by
    ``out_type`` as in mmpretrain (``'cls_token'``: (B, D); ``'featmap'``: (B, D, h, w); ``'raw'``:
    (B, 1 + h * w, D)).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # mmpretrain builds its layer class by name inside __init__; DeiT3Layer only overrides
        # forward (no state of its own), so switching each built layer's class is enough and keeps
        # the modules, their initialisation and the state-dict keys exactly mmpretrain's.
        for i, layer in enumerate(self.layers):
            if type(layer) is not DeiT3TransformerEncoderLayer:
                raise TypeError(f'mmkd_ext.DeiT3 expects mmpretrain to build '
                                f'DeiT3TransformerEncoderLayer, got {type(layer).__name__} for '
                                f'layer {i}; this mmpretrain version is not supported.')
            layer.__class__ = DeiT3Layer


# timm key -> key of ImageClassifier(backbone=DeiT3, head=VisionTransformerClsHead). The original
# facebookresearch/deit checkpoints name the layer scales gamma_1 / gamma_2 (timm: ls1.gamma).
_TOP_KEYS = [
    (r'^patch_embed\.proj\.', 'backbone.patch_embed.projection.'),
    (r'^pos_embed$', 'backbone.pos_embed'),
    (r'^cls_token$', 'backbone.cls_token'),
    (r'^blocks\.(\d+)\.', r'backbone.layers.\1.'),
    (r'^norm\.', 'backbone.ln1.'),
    (r'^head\.', 'head.layers.head.'),
]
_BLOCK_KEYS = [
    (r'\.norm1\.(weight|bias)$', r'.ln1.\1'),
    (r'\.norm2\.(weight|bias)$', r'.ln2.\1'),
    (r'\.attn\.(qkv|proj)\.(weight|bias)$', r'.attn.\1.\2'),
    (r'\.(ls1\.gamma|gamma_1)$', '.attn.gamma1.weight'),
    (r'\.(ls2\.gamma|gamma_2)$', '.ffn.gamma2.weight'),
    (r'\.mlp\.fc1\.(weight|bias)$', r'.ffn.layers.0.0.\1'),
    (r'\.mlp\.fc2\.(weight|bias)$', r'.ffn.layers.1.\1'),
]


def convert_timm_deit3(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map a timm DeiT III state dict onto mmkd_ext/mmpretrain DeiT3 classifier keys.

    timm's ``deit3_*`` models (``blocks.i.norm1``, ``attn.qkv``, ``ls1.gamma``, ``mlp.fc1``,
    ``norm``, ``head``) and the original facebookresearch/deit checkpoints (``gamma_1`` /
    ``gamma_2``) are both accepted; they become ``backbone.layers.i.ln1``, ``attn.qkv``,
    ``attn.gamma1.weight``, ``ffn.layers.0.0``, ``backbone.ln1``, ``head.layers.head`` of
    ``ImageClassifier(backbone=mmkd_ext.DeiT3, head=VisionTransformerClsHead)`` (the keys of
    mmpretrain's DeiT3 checkpoints). Tensors are unchanged: both sides add the position embedding to
    the patch tokens only, so ``pos_embed`` is (1, h * w, D) on both.

    Args:
        state_dict (dict[str, Tensor]): the timm state dict (a ``module.`` prefix is stripped).

    Returns:
        dict[str, Tensor]: the same tensors under the new keys.

    Raises:
        KeyError: for a key the mapping does not know (e.g. a distilled model's ``dist_token``),
            rather than dropping it silently.
    """
    out = {}
    for key, value in state_dict.items():
        key = key[len('module.'):] if key.startswith('module.') else key
        for pattern, repl in _TOP_KEYS:
            new = re.sub(pattern, repl, key)
            if new != key:
                break
        else:
            raise KeyError(f'convert_timm_deit3: unknown timm DeiT III key {key!r}')
        if new.startswith('backbone.layers.'):
            for pattern, repl in _BLOCK_KEYS:
                new, found = re.subn(pattern, repl, new)
                if found:
                    break
            else:
                raise KeyError(f'convert_timm_deit3: unknown timm DeiT III block key {key!r}')
        out[new] = value
    return out
