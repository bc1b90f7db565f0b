"""Build the student and the teacher (model dict, config file or ``package::path``) and freeze the
teacher. Config resolution lives in :mod:`mmkd_ext.utils.config`, checkpoint reading in
:mod:`mmkd_ext.utils.checkpoint`."""
import torch.nn as nn
from mmengine.registry import DefaultScope
from mmengine.registry import MODELS as MMENGINE_MODELS

from mmkd_ext.utils.config import ModelSpec, load_model_config


def build_model(spec: ModelSpec) -> nn.Module:
    """Build an OpenMMLab model in the scope of the running config (or the one it names)."""
    cfg = load_model_config(spec)
    if '_scope_' not in cfg and DefaultScope.get_current_instance() is None:
        raise RuntimeError(
            'Cannot tell which OpenMMLab package builds this model: set `default_scope` in the '
            "config (e.g. 'mmpretrain') or `_scope_` in the model dict.")
    return MMENGINE_MODELS.build(cfg)


def freeze(model: nn.Module) -> nn.Module:
    """No gradients for ``model``'s parameters, and eval mode."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
