"""Build the student and the teacher (model dict, config file or ``package::path``) and freeze the
teacher. Config resolution lives in :mod:`mmkd_ext.utils.config`, checkpoint reading in
:mod:`mmkd_ext.utils.checkpoint`."""
import torch.nn as nn
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import DefaultScope

from mmkd_ext.utils.config import ModelSpec, load_model_config


def build_model(spec: ModelSpec, role: str = 'model') -> nn.Module:
    """Build an OpenMMLab model in the scope of the running config (or the ``_scope_`` it names).

    Args:
        spec (dict | str): model dict, config path or ``package::path``.
        role (str): 'student' or 'teacher', for error messages. Defaults to 'model'.
    """
    cfg = load_model_config(spec)
    scope = cfg.get('_scope_') or getattr(DefaultScope.get_current_instance(), 'scope_name', None)
    # Without a scope (or under mmengine's / mmkd_ext's own) an unscoped type such as
    # 'ImageClassifier' is looked up where it does not exist: MMEngine's bare KeyError.
    if scope in (None, 'mmengine', 'mmkd_ext') and isinstance(cfg.get('type'), str) and \
            MMENGINE_MODELS.get(cfg['type']) is None:
        raise KeyError(
            f"Cannot build the {role} {cfg['type']!r}: no OpenMMLab package is named for it. Set "
            f"`default_scope = 'mmpretrain'` (or 'mmdet', 'mmseg') in the config, or "
            f"`_scope_='mmpretrain'` in the {role} model dict, or give the {role} as a config "
            f"path / 'mmpretrain::...' whose default_scope says it.")
    return MMENGINE_MODELS.build(cfg)


def freeze(model: nn.Module) -> nn.Module:
    """No gradients for ``model``'s parameters, and eval mode."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
