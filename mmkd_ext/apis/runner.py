"""Config -> MMEngine Runner, with the command-line switches of tools/train.py and tools/test.py."""
import gc
import os.path as osp
from typing import Optional, Union

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmkd_ext.datasets.augment_stream import apply_augment_stream, stream_description
from mmkd_ext.utils.config import load_config

__all__ = [
    'build_runner', 'close_distributed', 'prepare_stream', 'load_config', 'is_distiller',
    'DictAction'
]


def close_distributed() -> None:
    """Shut the default process group down before the interpreter exits.

    Left to exit-time destructors, the gloo/NCCL threads of a finished rank can abort it
    ("terminate called without an active exception", exit status -6) after all work is done, and
    torchrun then reports the whole run as failed. DDP's reducer holds a reference to the group,
    so the group outlives ``destroy_process_group`` while a wrapped model is alive: call this after
    the runner is gone (tools/train.py builds and trains it in a function of its own); the garbage
    collection here frees what reference cycles still hold.
    """
    gc.collect()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def is_distiller(model_cfg) -> bool:
    """Whether a model dict builds mmkd_ext's Distiller (``type`` 'Distiller' or
    'mmkd_ext.Distiller')."""
    return str(model_cfg.get('type', '')).split('.')[-1] == 'Distiller'


def prepare_stream(cfg) -> bool:
    """Apply ``augment_stream`` to a config (see :func:`apply_augment_stream`) and give a
    distiller's ``teacher_cache`` the run's stream to check the cache against. Returns whether the
    stream is on."""
    on = apply_augment_stream(cfg)
    model = cfg.get('model') or {}
    if on and is_distiller(model) and model.get('teacher_cache'):
        model.teacher_cache.expect = stream_description(cfg)
    return on


def build_runner(config: Union[str, Config],
                 work_dir: Optional[str] = None,
                 launcher: str = 'none',
                 cfg_options: Optional[dict] = None,
                 resume: Optional[str] = None,
                 amp: bool = False,
                 no_validate: bool = False,
                 auto_scale_lr: bool = False,
                 load_from: Optional[str] = None) -> Runner:
    """Build the Runner of ``config`` as tools/train.py and tools/test.py do.

    Args:
        resume: 'auto' resumes from the latest checkpoint in the work dir; a path resumes from it.
        load_from: weights to load without resuming (tools/test.py).
    """
    cfg = load_config(config, cfg_options)
    cfg.launcher = launcher
    prepare_stream(cfg)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        name = osp.splitext(osp.basename(cfg.filename))[0] if cfg.filename else 'run'
        cfg.work_dir = osp.join('./work_dirs', name)
    if amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper == 'OptimWrapper':
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        elif wrapper != 'AmpOptimWrapper':
            raise ValueError(f'--amp needs an OptimWrapper, the config uses {wrapper}.')
    if resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif resume is not None:
        cfg.resume, cfg.load_from = True, resume
    if load_from is not None:
        cfg.load_from = load_from
    if no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise KeyError('--auto-scale-lr needs `auto_scale_lr = dict(base_batch_size=...)`.')
        cfg.auto_scale_lr.enable = True
    if launcher != 'none' and not torch.cuda.is_available():
        # CPU processes (torchrun without GPUs): MMEngine's init_dist always calls
        # torch.cuda.set_device and its DDP wrapper passes LOCAL_RANK as a GPU id, so start the
        # gloo process group here and build DDP without device ids.
        if launcher != 'pytorch':
            raise RuntimeError(f'No CUDA device: only --launcher pytorch (torchrun) runs on the '
                               f'CPU, got {launcher!r}.')
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group(backend='gloo')
        cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
        cfg.setdefault('model_wrapper_cfg', dict(type='MMDistributedDataParallel'))
        cfg.model_wrapper_cfg.setdefault('device_ids', None)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
