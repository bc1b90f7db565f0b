"""Build the student and the teacher from a model dict, a config file, or ``package::path``.

Also loads the teacher's checkpoint with a report of what matched, and freezes it.
"""
import difflib
import importlib.util
import os
import os.path as osp
from typing import Optional, Union

import torch
import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.logging import MMLogger, print_log
from mmengine.registry import DefaultScope
from mmengine.registry import MODELS as MMENGINE_MODELS

ModelSpec = Union[dict, str]


def package_config_path(spec: str) -> str:
    """``mmpretrain::deit/deit-tiny_4xb256_in1k.py`` -> the file inside the installed package.

    MMEngine's own hub helper would ``pip install`` a missing package; we never do that silently.
    """
    package, rel = spec.split('::', 1)
    if importlib.util.find_spec(package) is None:
        raise ModuleNotFoundError(
            f'Config {spec!r} names the package {package!r}, which is not installed. Install it '
            f'(e.g. `pip install {package}`) or give a local config path or a model dict.')
    pkg_dir = osp.dirname(importlib.util.find_spec(package).origin)
    root = osp.join(pkg_dir, '.mim', 'configs')
    path = osp.join(root, rel)
    if not osp.isfile(path):
        known = []
        for dirpath, _, files in os.walk(root):
            known += [osp.relpath(osp.join(dirpath, f), root) for f in files if f.endswith('.py')]
        close = difflib.get_close_matches(rel, known, n=6, cutoff=0.4)
        raise FileNotFoundError(
            f'{package} has no config {rel!r} (looked in {root}). Closest: {", ".join(close) or "-"}')
    return path


def load_model_config(spec: ModelSpec) -> ConfigDict:
    """Return the model dict of ``spec`` with ``_scope_`` set when the source config names one."""
    if isinstance(spec, (dict, ConfigDict)):
        return ConfigDict(spec)
    if not isinstance(spec, str):
        raise TypeError(f'A model is a dict, a config path or "package::path", got {type(spec)}')
    path = package_config_path(spec) if '::' in spec else spec
    if not osp.isfile(path):
        raise FileNotFoundError(f'Model config file {path!r} does not exist.')
    cfg = Config.fromfile(path)
    if 'model' not in cfg:
        raise KeyError(f'Config {spec!r} has no `model` entry.')
    model = ConfigDict(cfg.model)
    # The Runner gives a top-level `data_preprocessor` to the model; do the same here, or a model
    # loaded from an mmpretrain config would lose its normalisation.
    if cfg.get('data_preprocessor') is not None and 'data_preprocessor' not in model:
        model['data_preprocessor'] = cfg.data_preprocessor
    if cfg.get('default_scope') and '_scope_' not in model:
        model['_scope_'] = cfg.default_scope
    return model


def build_model(spec: ModelSpec) -> nn.Module:
    """Build an OpenMMLab model in the scope of the running config (or the one it names)."""
    cfg = load_model_config(spec)
    if '_scope_' not in cfg and DefaultScope.get_current_instance() is None:
        raise RuntimeError(
            'Cannot tell which OpenMMLab package builds this model: set `default_scope` in the '
            "config (e.g. 'mmpretrain') or `_scope_` in the model dict.")
    return MMENGINE_MODELS.build(cfg)


def _unwrap_state_dict(ckpt) -> dict:
    if not isinstance(ckpt, dict):
        raise TypeError(f'A checkpoint must hold a dict, got {type(ckpt).__name__}.')
    for key in ('state_dict', 'model', 'module'):
        if key in ckpt and isinstance(ckpt[key], dict):
            ckpt = ckpt[key]
            break
    out = {}
    for k, v in ckpt.items():
        if not torch.is_tensor(v):
            continue
        for prefix in ('module.', '_orig_mod.'):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_teacher_checkpoint(model: nn.Module, checkpoint: str, min_matched: float = 0.5,
                            prefix: Optional[str] = None, logger: Optional[MMLogger] = None):
    """Load ``checkpoint`` into the teacher and report missing, unexpected and mis-shaped keys.

    Args:
        model: the teacher.
        checkpoint: a local path or URL (anything MMEngine's CheckpointLoader reads).
        min_matched: the fraction of the teacher's state-dict entries the checkpoint must fill;
            below it the teacher would be (almost) random, which is an error, not a warning.
        prefix: keep only keys under this prefix and strip it (e.g. 'backbone.').

    Returns:
        dict with the lists ``missing``, ``unexpected``, ``mismatched`` and the count ``matched``.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    state = _unwrap_state_dict(CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu'))
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in matched]
    unexpected = [k for k in state if k not in own]
    report = dict(matched=len(matched), missing=missing, unexpected=unexpected,
                  mismatched=mismatched)
    fraction = len(matched) / max(len(own), 1)
    if fraction < min_matched:
        example_ckpt = ', '.join(list(state)[:4]) or '(no tensors)'
        example_model = ', '.join(list(own)[:4])
        raise ValueError(
            f'Teacher checkpoint {checkpoint!r} fills only {len(matched)} of {len(own)} teacher '
            f'entries ({fraction:.0%} < min_matched {min_matched:.0%}): it does not belong to this '
            f'teacher model. Checkpoint keys look like [{example_ckpt}], the teacher expects '
            f'[{example_model}]. Check the teacher config, or set `teacher_prefix` if the weights '
            f'sit under a prefix. Mis-shaped: {mismatched[:5]}')
    model.load_state_dict(matched, strict=False)
    lines = [f'Loaded teacher checkpoint {checkpoint}: {len(matched)}/{len(own)} entries matched.']
    for name, keys in (('missing in checkpoint', missing), ('unexpected in checkpoint', unexpected),
                       ('wrong shape (not loaded)', mismatched)):
        if keys:
            lines.append(f'  {name} ({len(keys)}): {", ".join(keys[:10])}'
                         + (' ...' if len(keys) > 10 else ''))
    print_log('\n'.join(lines), logger=logger or 'current',
              level=30 if (missing or unexpected or mismatched) else 20)
    return report


def freeze(model: nn.Module) -> nn.Module:
    """No gradients for ``model``'s parameters, and eval mode."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
