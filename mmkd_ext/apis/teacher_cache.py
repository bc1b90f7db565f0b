"""Build a teacher cache: run the teacher over exactly the batches a training run will see and store
its logits (``tools/build_teacher_cache.py``; the format: :mod:`mmkd_ext.distillers.teacher_cache`).
"""
import copy
import json
import os
import os.path as osp
import time
from typing import Optional

import torch
from mmengine.dist import barrier, get_dist_info
from mmengine.logging import print_log
from mmengine.registry import MODELS
from mmengine.runner import Runner

from mmkd_ext.datasets.augment_stream import (batch_indices, batch_stream_key, step_seed,
                                              stream_description)
from mmkd_ext.distillers.teacher_cache import (CHECKED, FORMAT, MANIFEST, TeacherCacheWriter,
                                               checkpoint_id, shard_path, steps_per_epoch,
                                               topk_error)
from mmkd_ext.utils.config import load_config
from mmkd_ext.utils.rng import seed_global_rngs
from .runner import is_distiller, prepare_stream


def _write_json(path: str, obj: dict) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def build_teacher_cache(config,
                        epochs: int,
                        out: str,
                        topk: Optional[int] = None,
                        dtype: str = 'float32',
                        world_size: Optional[int] = None,
                        device: Optional[str] = None,
                        cfg_options: Optional[dict] = None,
                        flush_every: int = 50) -> dict:
    """Run the teacher of a distillation config over epochs ``0 .. epochs - 1`` of its training
    stream and store its logits under ``out``; resumes what an earlier call left.

    Args:
        config (str | Config): a distillation config with ``augment_stream``.
        epochs (int): build epochs 0 .. epochs - 1 (those already in the cache are kept).
        out (str): the cache directory.
        topk (int, optional): store only the K most likely classes (float16 log-probabilities +
            class indices); None stores full logits. Defaults to None.
        dtype (str): 'float32' or 'float16' for full logits. Defaults to 'float32'.
        world_size (int, optional): the number of training processes the cache is for, when this
            call runs in one process (it builds every rank's shards); in a distributed launch each
            process builds its own rank. Defaults to None (1, or the launch's world size).
        device (str, optional): where the teacher runs. Defaults to cuda when available.
        cfg_options (dict, optional): config overrides. Defaults to None.
        flush_every (int): steps between saved progress (a killed build resumes there).
            Defaults to 50.

    Returns:
        dict: the manifest.
    """
    cfg = load_config(config, cfg_options, activate=True)
    if not is_distiller(cfg.model):
        raise ValueError('build_teacher_cache needs a distillation config (model.type '
                         f'Distiller), got {cfg.model.get("type")}.')
    if not prepare_stream(cfg):
        raise ValueError('A teacher cache replays the batches of a deterministic augmentation '
                         'stream: set augment_stream=dict(seed=...) in the config (the same for '
                         'the build and every run that reads the cache).')
    if dtype not in ('float32', 'float16'):
        raise ValueError(f'dtype must be float32 or float16, got {dtype!r}.')
    rank, dist_world = get_dist_info()
    if dist_world > 1:
        if world_size not in (None, dist_world):
            raise ValueError(f'--world-size {world_size} in a launch of {dist_world} processes: '
                             f'each process builds its own rank.')
        world_size, ranks = dist_world, [rank]
    else:
        world_size = int(world_size or 1)
        ranks = list(range(world_size))
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))

    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.pop('teacher_cache', None)
    distiller = MODELS.build(model_cfg).to(device)
    distiller.train()  # the student's mode does not matter; the teacher stays in eval
    paths = list(distiller.teacher_taps.paths)
    if len(paths) != 1 or any(m.teacher_needs_grad for m in distiller.methods):
        raise ValueError(f'A teacher cache holds one tap of the teacher (its logits); the methods '
                         f'of this config read {paths}.')
    tap = paths[0]
    with torch.no_grad():
        probe = distiller.teacher_features(torch.zeros(1, *distiller.input_shape,
                                                       device=device))[tap]
    if not torch.is_tensor(probe) or probe.dim() != 2:
        raise ValueError(f'The teacher tap {tap!r} gives {type(probe).__name__} '
                         f'{tuple(getattr(probe, "shape", ()))}; a cache stores (B, C) logits.')
    num_classes = int(probe.shape[1])
    if topk is not None and not 1 <= int(topk) < num_classes:
        raise ValueError(f'--topk must be between 1 and {num_classes - 1} (the teacher scores '
                         f'{num_classes} classes); leave it out for full logits.')
    storage = (
        dict(kind='topk', k=int(topk)) if topk is not None else dict(kind='full', dtype=dtype))
    stream = stream_description(cfg)
    manifest = dict(
        format=FORMAT,
        teacher_config=distiller.teacher_fingerprint['config'],
        teacher_checkpoint=checkpoint_id(model_cfg.get('teacher_checkpoint')),
        teacher_fingerprint=distiller.teacher_fingerprint,
        student_preprocessor=distiller.student_preprocessor_digest,
        tap=tap,
        stream=stream,
        world_size=world_size,
        num_classes=num_classes,
        storage=storage,
        epochs=[],
        epoch_stats={})
    os.makedirs(out, exist_ok=True)
    manifest_path = osp.join(out, MANIFEST)
    if osp.isfile(manifest_path):
        with open(manifest_path) as f:
            old = json.load(f)
        differ = [
            k for k in CHECKED + ('format', 'num_classes', 'storage') if old.get(k) != manifest[k]
        ]
        if differ:
            raise ValueError(f'{out} holds a teacher cache for another run or storage (it differs '
                             f'in {differ}): use another --out, or delete it.')
        manifest['epochs'], manifest['epoch_stats'] = old['epochs'], old.get('epoch_stats', {})
    elif rank == 0:
        _write_json(manifest_path, manifest)

    seed = stream['seed']
    for epoch in range(int(epochs)):
        if epoch in manifest['epochs']:
            continue
        t0, err = time.time(), {}
        for r in ranks:
            loader_cfg = copy.deepcopy(cfg.train_dataloader)
            loader_cfg.sampler.update(rank=r, world_size=world_size)
            loader = Runner.build_dataloader(loader_cfg, seed=seed)
            sampler = loader.sampler
            steps = steps_per_epoch(len(sampler), stream['batch_size'], stream['drop_last'])
            rows = steps * stream['batch_size'] if stream['drop_last'] else len(sampler)
            if osp.isfile(shard_path(out, epoch, r, 'indices')):
                continue  # this rank finished before an interruption
            writer = TeacherCacheWriter(out, epoch, r, rows, num_classes, storage,
                                        stream['batch_size'], flush_every)
            sampler.set_epoch(epoch)
            sampler.skip_steps(writer.steps_done)
            for step, batch in enumerate(loader, start=writer.steps_done):
                key = batch_stream_key(batch['data_samples'])
                assert (key.epoch, key.step, key.rank) == (epoch, step, r), (key, epoch, step, r)
                # What AugmentStreamHook does before a training step: same batch augments.
                seed_global_rngs(step_seed(seed, epoch, step, r))
                data = distiller.data_preprocessor(batch, True)
                with torch.no_grad():
                    logits = distiller.teacher_features(data['inputs'], data['data_samples'])[tap]
                writer.write(step, batch_indices(data['data_samples']), logits)
                if topk is not None:
                    for name, values in topk_error(logits, int(topk)).items():
                        err.setdefault(name, []).extend(values)
            writer.finish()
        barrier()
        if rank == 0:
            nbytes = sum(
                osp.getsize(shard_path(out, epoch, r, p)) for r in range(world_size)
                for p in ('indices', 'logits', 'logprobs', 'classes')
                if osp.isfile(shard_path(out, epoch, r, p)))
            stats = dict(seconds=round(time.time() - t0, 3), bytes=nbytes)
            if err:
                stats['topk_error'] = {
                    n: dict(mean=sum(v) / len(v), max=max(v))
                    for n, v in err.items()
                }
            manifest['epochs'] = sorted(manifest['epochs'] + [epoch])
            manifest['epoch_stats'][str(epoch)] = stats
            _write_json(manifest_path, manifest)
            print_log(
                f'teacher cache: epoch {epoch} in {stats["seconds"]:.1f} s, '
                f'{nbytes / 2**20:.2f} MiB for {world_size} rank(s)',
                logger='current')
    barrier()
    return manifest
