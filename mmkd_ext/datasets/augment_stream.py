"""Deterministic augmentation streams: every random choice of a training epoch is a function of
(seed, epoch, sample index) or (seed, epoch, step, rank), whatever the number of dataloader workers.

Three parts, switched on together by one top-level config entry (``augment_stream = dict(seed=0)``,
applied by :func:`apply_augment_stream`, which :func:`mmkd_ext.apis.build_runner` calls):

* :class:`AugmentStreamSampler` orders an epoch as MMEngine's ``DefaultSampler`` does (seed +
  epoch, shuffle, round up, rank ``r`` of ``W`` takes every W-th index) and yields a
  :class:`StreamKey` ``(epoch, step, rank, index)`` instead of the bare index: the key travels with
  the sample to whichever worker loads it.
* :class:`AugmentStreamDataset` wraps any dataset: it seeds Python's, NumPy's and torch's global
  generators from (seed, epoch, index) around the pipeline of that one sample (RandomResizedCrop,
  flip, RandAugment, RandomErasing, ... draw from them; mmpretrain's transforms are not edited),
  restores them afterwards, and writes the key into the sample's metainfo (``stream_key``).
* :class:`mmkd_ext.engine.AugmentStreamHook` seeds the global generators from (seed, epoch, step,
  rank) of the batch right before each training step, so the batch augments (Mixup / CutMix in
  the data preprocessor), DropPath, Dropout and the methods' random masks draw the same numbers
  for the same step, in an uninterrupted run, a resumed run and :mod:`mmkd_ext.apis.teacher_cache`.

A resumed run therefore continues bit for bit (MMEngine saves no RNG state), and a teacher's outputs
can be computed ahead of training for exactly the batches training will see.
"""
import math
from typing import Iterator, List, NamedTuple, Optional

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from torch.utils.data import Dataset, Sampler

from mmkd_ext.registry import DATA_SAMPLERS, DATASETS
from mmkd_ext.utils.config import config_digest
from mmkd_ext.utils.rng import preserved_rngs

# Salts keep the per-sample and the per-step streams apart for equal numbers.
_SAMPLE, _STEP = 0x5A, 0x57


class StreamKey(NamedTuple):
    """Where a sample sits in the training stream.

    Args:
        epoch (int): the epoch.
        step (int): the batch of this rank within the epoch (position // batch size).
        rank (int): the process that trains on it.
        index (int): the sample's index in the dataset.
    """
    epoch: int
    step: int
    rank: int
    index: int


def stream_seed(*numbers: int) -> int:
    """A 63-bit seed from a tuple of non-negative ints (NumPy's SeedSequence hashing)."""
    words = np.random.SeedSequence([int(n) for n in numbers]).generate_state(2, np.uint64)
    return int(words[0] >> np.uint64(1))


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's pipeline in one epoch."""
    return stream_seed(_SAMPLE, seed, epoch, index)


def step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """The seed of one training step of one rank (batch augments, DropPath, method masks)."""
    return stream_seed(_STEP, seed, epoch, step, rank)


@DATA_SAMPLERS.register_module()
class AugmentStreamSampler(Sampler):
    """MMEngine's ``DefaultSampler`` order, yielding :class:`StreamKey` s.

    Args:
        dataset (Sized): the (wrapped) dataset.
        batch_size (int): the dataloader's batch size per process (the step of a key is its
            position // batch_size).
        shuffle (bool): shuffle each epoch with ``seed + epoch``. Defaults to True.
        seed (int): the stream seed (the same in every process). Required.
        round_up (bool): pad the epoch to a multiple of the world size with its first indices, as
            ``DefaultSampler``. Defaults to True.
        rank (int, optional): the process; defaults to the distributed rank. Defaults to None.
        world_size (int, optional): defaults to the distributed world size. Defaults to None.
    """

    def __init__(self,
                 dataset,
                 batch_size: int,
                 shuffle: bool = True,
                 seed: Optional[int] = None,
                 round_up: bool = True,
                 rank: Optional[int] = None,
                 world_size: Optional[int] = None):
        if seed is None:
            raise ValueError('AugmentStreamSampler needs a fixed `seed` (the same in every '
                             'process): set augment_stream=dict(seed=...) in the config.')
        if int(batch_size) < 1:
            raise ValueError(f'AugmentStreamSampler: batch_size must be >= 1, got {batch_size}.')
        dist_rank, dist_world = get_dist_info()
        self.rank = dist_rank if rank is None else int(rank)
        self.world_size = dist_world if world_size is None else int(world_size)
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.shuffle, self.seed, self.round_up = shuffle, int(seed), round_up
        self.epoch = 0
        self.start_step = 0
        n = len(dataset)
        if round_up:
            self.num_samples = math.ceil(n / self.world_size)
            self.total_size = self.num_samples * self.world_size
        else:
            self.num_samples = math.ceil((n - self.rank) / self.world_size)
            self.total_size = n

    def indices(self, epoch: int) -> List[int]:
        """This rank's dataset indices of ``epoch``, in training order."""
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        if self.round_up:
            order = (order * int(self.total_size / n + 1))[:self.total_size]
        return order[self.rank:self.total_size:self.world_size]

    def keys(self, epoch: int) -> List[StreamKey]:
        """This rank's keys of ``epoch``, in training order."""
        return [
            StreamKey(epoch, pos // self.batch_size, self.rank, index)
            for pos, index in enumerate(self.indices(epoch))
        ]

    def __iter__(self) -> Iterator[StreamKey]:
        keys = self.keys(self.epoch)[self.start_step * self.batch_size:]
        self.start_step = 0  # a skip applies to one pass only
        return iter(keys)

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_steps(self, steps: int) -> None:
        """Start the next pass at step ``steps`` of the epoch (a resumed cache build)."""
        self.start_step = int(steps)


@DATASETS.register_module()
class AugmentStreamDataset(Dataset):
    """Wrap a dataset so that each sample's random transforms are seeded by (seed, epoch, index).

    Indexed by a :class:`StreamKey` (what :class:`AugmentStreamSampler` yields), it runs the wrapped
    dataset's ``__getitem__(index)`` with the global generators seeded by
    :func:`sample_seed` and puts the key in the sample's metainfo as ``stream_key``. A plain int
    index runs the wrapped dataset as it is (unseeded).

    Args:
        dataset (dict | Dataset): the dataset, or its config.
        seed (int): the stream seed. Required.
    """

    def __init__(self, dataset, seed: int):
        self.dataset = MMENGINE_DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        self.seed = int(seed)

    @property
    def metainfo(self):
        return getattr(self.dataset, 'metainfo', {})

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):
        # The Runner and hooks read attributes of the training dataset (metainfo, pipeline, ...).
        # Never for dunders (copy / pickle protocols) or before `dataset` is set (unpickling).
        if name == 'dataset' or name.startswith('__'):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key):
        if not isinstance(key, (tuple, list)):
            return self.dataset[key]
        key = StreamKey(*[int(k) for k in key])
        with preserved_rngs(sample_seed(self.seed, key.epoch, key.index)):
            data = self.dataset[key.index]
        samples = data.get('data_samples') if isinstance(data, dict) else None
        if samples is None or not hasattr(samples, 'set_metainfo'):
            raise TypeError(
                f'AugmentStreamDataset: the wrapped dataset\'s pipeline must end with a packing '
                f'transform that makes `data_samples` (PackInputs, PackDetInputs, '
                f'PackSegInputs); got {type(samples).__name__}.')
        samples.set_metainfo(dict(stream_key=tuple(key)))
        return data


def batch_stream_key(data_samples) -> Optional[StreamKey]:
    """The (epoch, step, rank) of a collated batch, as the StreamKey of its first sample, or None
    when the batch carries no stream keys. Raises when the samples of one batch disagree."""
    if not data_samples:
        return None
    keys = [getattr(s, 'metainfo', {}).get('stream_key') for s in data_samples]
    if all(k is None for k in keys):
        return None
    if any(k is None for k in keys) or len({tuple(k[:3]) for k in keys}) != 1:
        raise RuntimeError(
            f'The samples of one batch come from different stream steps ({keys[:4]}...): the '
            f'train dataloader must batch the AugmentStreamSampler\'s keys in order (no '
            f'batch_sampler that reorders them).')
    return StreamKey(*keys[0])


def batch_indices(data_samples) -> List[int]:
    """The dataset indices of a batch that carries stream keys."""
    return [int(s.metainfo['stream_key'][3]) for s in data_samples]


def stream_description(cfg) -> dict:
    """What the training batches depend on, from a config with ``augment_stream`` applied: the
    stream seed, the batch size per process, the sampler's ordering, and a digest of the dataset
    config (with its pipeline). A teacher cache records it and is refused when it differs."""
    loader = cfg.train_dataloader
    sampler = loader.sampler
    return dict(
        seed=int(sampler.seed),
        batch_size=int(loader.batch_size),
        shuffle=bool(sampler.get('shuffle', True)),
        round_up=bool(sampler.get('round_up', True)),
        drop_last=bool(loader.get('drop_last', False)),
        dataset=config_digest(loader.dataset.dataset))


def apply_augment_stream(cfg) -> bool:
    """Turn ``augment_stream = dict(seed=...)`` (or ``True``: the seed of ``randomness``) of a
    config into the wrapped dataset, the stream sampler and the step-seeding hook, in place.

    Returns whether the stream is on. The sampler keeps the config's ``shuffle`` / ``round_up``;
    ``randomness.seed`` is set to the stream seed when absent.
    """
    spec = cfg.get('augment_stream')
    if not spec:
        return False
    if spec is True:
        spec = dict()
    if not isinstance(spec, dict) or set(spec) - {'seed'}:
        raise TypeError(f'augment_stream must be True or dict(seed=INT), got {spec!r}.')
    seed = spec.get('seed', (cfg.get('randomness') or {}).get('seed'))
    if seed is None:
        raise ValueError('augment_stream needs a seed: augment_stream=dict(seed=0), or '
                         'randomness=dict(seed=0).')
    cfg.setdefault('randomness', {}).setdefault('seed', int(seed))
    loader = cfg.train_dataloader
    if loader.get('batch_sampler') is not None:
        raise ValueError('augment_stream does not combine with a custom `batch_sampler` in '
                         'train_dataloader: the steps of the stream are consecutive batches.')
    dataset = loader.dataset
    if str(dataset.get('type', '')).split('.')[-1] == 'AugmentStreamDataset':
        dataset = dataset.dataset  # applied already
    old = loader.get('sampler') or {}
    kind = str(old.get('type', 'DefaultSampler')).split('.')[-1]
    if kind not in ('DefaultSampler', 'AugmentStreamSampler'):
        raise ValueError(f'augment_stream replaces the DefaultSampler; the config uses {kind}, '
                         f'whose order it cannot reproduce.')
    loader.dataset = dict(type='mmkd_ext.AugmentStreamDataset', dataset=dataset, seed=int(seed))
    loader.sampler = dict(
        type='mmkd_ext.AugmentStreamSampler',
        batch_size=int(loader.batch_size),
        shuffle=old.get('shuffle', True),
        round_up=old.get('round_up', True),
        seed=int(seed))
    hooks = [
        h for h in cfg.get('custom_hooks', [])
        if str(h.get('type', '')).split('.')[-1] != 'AugmentStreamHook'
    ]
    cfg.custom_hooks = hooks + [dict(type='mmkd_ext.AugmentStreamHook', seed=int(seed))]
    return True
