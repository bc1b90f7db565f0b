"""Deterministic augmentation streams: the sampler's order, per-sample seeding, workers, resume."""
import copy
import random

import numpy as np
import pytest
import torch
from conftest import KD_CFG, STUDENT_CFG, mixing_student, tiny_cfg
from mmengine.dataset import DefaultSampler
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS

from mmkd_ext.apis.runner import prepare_stream
from mmkd_ext.datasets import (AugmentStreamDataset, AugmentStreamSampler, StreamKey,
                               apply_augment_stream, stream_description)

# Every kind of per-sample random transform of mmpretrain's ImageNet recipes (Swin / DeiT).
RANDOM_PIPELINE = [
    dict(type='RandomResizedCrop', scale=16, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[104, 116, 124], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.5,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=[103.53, 116.28, 123.675],
        fill_std=[57.375, 57.12, 58.395]),
    dict(type='PackInputs'),
]
# The digits' own training augmentation (grey 8x8: RandAugment and RandomErasing need colour).
DIGITS_PIPELINE = [
    dict(type='RandomResizedCrop', scale=8, crop_ratio_range=(0.5, 1.0)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]


@DATASETS.register_module(force=True)
class PhotoPatches(BaseDataset):
    """24x24 colour patches of scikit-learn's two sample photos (4 classes by position)."""

    def load_data_list(self):
        from sklearn.datasets import load_sample_images
        photos = load_sample_images().images
        out = []
        for i in range(48):
            photo = photos[i % 2]
            y, x = 17 * (i // 2) % (photo.shape[0] - 24), 29 * i % (photo.shape[1] - 24)
            out.append(
                dict(img=np.ascontiguousarray(photo[y:y + 24, x:x + 24, ::-1]), gt_label=i % 4))
        return out


def photos(pipeline=RANDOM_PIPELINE):
    init_default_scope('mmpretrain')
    return PhotoPatches(ann_file='', pipeline=copy.deepcopy(pipeline))


def digits(n=40):
    init_default_scope('mmpretrain')
    from mmkd_ext.datasets import DigitsDataset
    return DigitsDataset(split='train', pipeline=copy.deepcopy(DIGITS_PIPELINE), indices=n)


def test_sampler_order_is_mmengines_default_sampler_order():
    ds = digits(37)
    for epoch in (0, 3):
        ref = DefaultSampler(ds, shuffle=True, seed=5)
        ref.set_epoch(epoch)
        ours = AugmentStreamSampler(ds, batch_size=8, shuffle=True, seed=5)
        ours.set_epoch(epoch)
        keys = list(ours)
        assert [k.index for k in keys] == list(ref)
        assert [k.step for k in keys] == [p // 8 for p in range(37)]
        assert {k.epoch for k in keys} == {epoch} and {k.rank for k in keys} == {0}
    # Two ranks share the rounded-up permutation, every other index each, as DefaultSampler.
    ranks = [AugmentStreamSampler(ds, 4, seed=5, rank=r, world_size=2) for r in (0, 1)]
    perm = torch.randperm(37, generator=torch.Generator().manual_seed(5)).tolist()
    perm = (perm * 2)[:38]
    assert [k.index for k in ranks[0]] == perm[0::2]
    assert [k.index for k in ranks[1]] == perm[1::2]
    assert len(ranks[1]) == 19
    s = AugmentStreamSampler(ds, 4, seed=5)
    s.skip_steps(2)
    assert [k.index for k in s] == [k.index for k in AugmentStreamSampler(ds, 4, seed=5)][8:]
    assert len(list(s)) == 37, 'a skip applies to one pass only'
    with pytest.raises(ValueError, match='fixed `seed`'):
        AugmentStreamSampler(ds, 4)


def test_each_sample_is_a_function_of_seed_epoch_and_index():
    wrapped = AugmentStreamDataset(photos(), seed=3)
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    before = random.random(), np.random.rand(), torch.rand(1).item()
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    a = wrapped[StreamKey(2, 0, 0, 7)]
    b = wrapped[StreamKey(2, 5, 1, 7)]  # same (epoch, index), another step / rank
    c = wrapped[StreamKey(3, 0, 0, 7)]
    # The caller's generators are untouched by the seeded pipeline.
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == before
    assert torch.equal(a['inputs'], b['inputs'])
    assert a['data_samples'].stream_key == (2, 0, 0, 7)
    # Over a few indices, another epoch draws other crops / flips / erasings.
    other = [
        not torch.equal(wrapped[StreamKey(2, 0, 0, i)]['inputs'], wrapped[StreamKey(
            3, 0, 0, i)]['inputs']) for i in range(8)
    ]
    assert any(other) or not torch.equal(a['inputs'], c['inputs'])
    other_seed = AugmentStreamDataset(photos(), seed=4)[StreamKey(2, 0, 0, 7)]
    assert not torch.equal(other_seed['inputs'], a['inputs'])
    # A plain index is the wrapped dataset's own item (unseeded, no key).
    assert 'stream_key' not in wrapped[7]['data_samples']


def _loader_cfg(num_workers):
    cfg = tiny_cfg(STUDENT_CFG, '/nonexistent')
    cfg.train_dataloader.dataset = dict(type='PhotoPatches', ann_file='', pipeline=RANDOM_PIPELINE)
    cfg.train_dataloader.batch_size = 20
    cfg.train_dataloader.num_workers = num_workers
    cfg.train_dataloader.persistent_workers = num_workers > 0
    cfg.augment_stream = dict(seed=11)
    assert apply_augment_stream(cfg)
    return cfg.train_dataloader


def _epoch(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return [(torch.stack(b['inputs']), [s.stream_key for s in b['data_samples']]) for b in loader]


def test_epochs_are_identical_whatever_the_number_of_workers():
    init_default_scope('mmpretrain')
    l0 = Runner.build_dataloader(_loader_cfg(0), seed=0)
    l2 = Runner.build_dataloader(_loader_cfg(2), seed=123)  # another worker seed: no effect
    for epoch in (0, 1):
        a, b = _epoch(l0, epoch), _epoch(l2, epoch)
        assert len(a) == 3
        for (xa, ka), (xb, kb) in zip(a, b):
            assert ka == kb
            assert torch.equal(xa, xb)
    assert not torch.equal(_epoch(l0, 0)[0][0], _epoch(l0, 1)[0][0])


def test_config_switch_wraps_dataset_sampler_and_adds_the_hook():
    cfg = tiny_cfg(KD_CFG, '/nonexistent')
    plain = copy.deepcopy(cfg.train_dataloader.dataset)
    assert not apply_augment_stream(cfg), 'off unless asked for'
    cfg.augment_stream = True  # the seed of `randomness`
    assert apply_augment_stream(cfg) and apply_augment_stream(cfg)  # idempotent
    loader = cfg.train_dataloader
    assert loader.dataset.type == 'mmkd_ext.AugmentStreamDataset'
    assert loader.dataset.dataset == plain
    assert loader.sampler.type == 'mmkd_ext.AugmentStreamSampler'
    assert loader.sampler.batch_size == loader.batch_size and loader.sampler.seed == 0
    assert [h.type for h in cfg.custom_hooks].count('mmkd_ext.AugmentStreamHook') == 1
    desc = stream_description(cfg)
    assert desc['seed'] == 0 and desc['batch_size'] == 32
    cfg2 = tiny_cfg(KD_CFG, '/nonexistent')
    cfg2.train_dataloader.dataset.pipeline = [dict(type='PackInputs')]
    cfg2.augment_stream = True
    apply_augment_stream(cfg2)
    assert stream_description(cfg2)['dataset'] != desc['dataset']

    bad = tiny_cfg(KD_CFG, '/nonexistent')
    bad.augment_stream = True
    bad.randomness = dict(seed=None)
    with pytest.raises(ValueError, match='needs a seed'):
        apply_augment_stream(bad)
    bad.augment_stream = dict(seed=0)
    bad.train_dataloader.sampler = dict(type='RepeatAugSampler')
    with pytest.raises(ValueError, match='RepeatAugSampler'):
        apply_augment_stream(bad)
    bad.augment_stream = dict(sed=0)
    with pytest.raises(TypeError, match='dict\\(seed=INT\\)'):
        apply_augment_stream(bad)


class StepLosses(Hook):
    """Every training step's logged losses, with the stream key of its batch."""

    def __init__(self):
        self.rows = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        key = data_batch['data_samples'][0].metainfo.get('stream_key')
        self.rows.append((runner.epoch, batch_idx, key and tuple(key[:3]), {
            k: float(v.detach())
            for k, v in outputs.items()
        }))


class Kill(Exception):
    pass


class KillAfterFirstEpoch(Hook):

    def after_train_epoch(self, runner):
        if runner.epoch == 0:
            raise Kill


def _run(work, teacher_ckpt, stream, hooks, resume=False):
    cfg = tiny_cfg(KD_CFG, work, max_epochs=2, teacher_checkpoint=teacher_ckpt)
    cfg.train_dataloader.dataset.pipeline = DIGITS_PIPELINE
    cfg.model.student = mixing_student()
    if stream:
        cfg.augment_stream = dict(seed=0)
    cfg.resume = resume
    prepare_stream(cfg)
    runner = Runner.from_cfg(cfg)
    for h in hooks:
        runner.register_hook(h, priority='LOWEST')
    return runner


@pytest.mark.parametrize('stream', [True, False])
def test_killed_and_resumed_run_continues_bit_for_bit_only_with_the_stream(
        tmp_path, teacher_ckpt, stream):
    # Random crops and flips per sample, Mixup / CutMix per batch.
    full = StepLosses()
    _run(tmp_path / 'full', teacher_ckpt, stream, [full]).train()
    with pytest.raises(Kill):
        _run(tmp_path / 'killed', teacher_ckpt, stream, [KillAfterFirstEpoch()]).train()
    resumed = StepLosses()
    _run(tmp_path / 'killed', teacher_ckpt, stream, [resumed], resume=True).train()
    want = [r for r in full.rows if r[0] == 1]
    assert [r[:3] for r in resumed.rows] == [r[:3] for r in want] and len(want) == 4
    same = [got[3] == exp[3] for got, exp in zip(resumed.rows, want)]
    if stream:
        assert all(same), 'the resumed run diverged from the uninterrupted one'
        assert want[0][2] == (1, 0, 0)
    else:
        # MMEngine restores no RNG state: random crops differ from the first resumed step.
        assert not any(same)
