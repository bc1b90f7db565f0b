"""List every module path of a model with its output shape, to choose feature taps."""
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

from mmkd_ext.distillers.builder import build_model
from mmkd_ext.distillers.taps import feature_shape
from mmkd_ext.utils.config import load_config
from .runner import is_distiller


def module_shapes(model: nn.Module, input_shape: Sequence[int]) -> List[Tuple[str, str, object]]:
    """(path, module type, output shape without batch dim or 'not run') for every submodule, from
    one eval-mode forward of a (2, *input_shape) zero batch in ``mode='tensor'``."""
    seen: Dict[str, object] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(mod, args, out, name=name):
            seen.setdefault(name, feature_shape(out))

        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, *input_shape), None, mode='tensor')
    except Exception as e:  # noqa: BLE001  (e.g. a detector head that needs image metas)
        # Everything up to the failing module has its shape; the rest is listed as not run.
        print(f'forward stopped early ({type(e).__name__}: {e}); later modules show "not run"')
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [(name, type(m).__name__, seen.get(name, 'not run'))
            for name, m in model.named_modules() if name]


def list_taps(config: str, input_shape: Sequence[int] = None) -> Dict[str, list]:
    """{'student': rows, 'teacher': rows} for a distillation config, {'model': rows} otherwise."""
    model_cfg = load_config(config, activate=True).model
    if is_distiller(model_cfg):
        shape = input_shape or model_cfg.get('input_shape', (3, 224, 224))
        return {
            role: module_shapes(build_model(model_cfg[role]), shape)
            for role in ('student', 'teacher')
        }
    return {'model': module_shapes(build_model(model_cfg), input_shape or (3, 224, 224))}
