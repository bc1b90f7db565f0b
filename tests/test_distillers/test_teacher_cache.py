"""The teacher cache: exact replay of the live teacher, top-K, refusals, verification, resume."""
import copy
import json
import os.path as osp

import numpy as np
import pytest
import torch
from conftest import KD_CFG, mixing_student, tiny_cfg
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmkd_ext.apis.runner import prepare_stream
from mmkd_ext.apis.teacher_cache import build_teacher_cache
from mmkd_ext.distillers.teacher_cache import TeacherCache, decode_topk, encode_topk, topk_error

PIPELINE = [
    dict(type='RandomResizedCrop', scale=8, crop_ratio_range=(0.5, 1.0)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]


def kd_cfg(work, teacher_ckpt, max_epochs=1, num_workers=0, cache=None, methods=None, seed=0):
    """The digits KD config with random crops, Mixup / CutMix and the augmentation stream."""
    cfg = tiny_cfg(KD_CFG, work, max_epochs=max_epochs, teacher_checkpoint=teacher_ckpt)
    cfg.train_dataloader.dataset.pipeline = PIPELINE
    cfg.train_dataloader.num_workers = num_workers
    cfg.train_dataloader.persistent_workers = num_workers > 0
    cfg.model.student = mixing_student()
    cfg.augment_stream = dict(seed=seed)
    if methods is not None:
        cfg.model.methods = methods
    if cache is not None:
        cfg.model.teacher_cache = cache
    return cfg


class StepLosses(Hook):

    def __init__(self):
        self.rows = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.rows.append((runner.epoch, batch_idx, {
            k: float(v.detach())
            for k, v in outputs.items()
        }))


def train(cfg, resume=False):
    cfg.resume = resume
    prepare_stream(cfg)
    runner = Runner.from_cfg(cfg)
    rec = StepLosses()
    runner.register_hook(rec, priority='LOWEST')
    runner.train()
    return rec.rows, runner


@pytest.fixture(scope='module')
def full_cache(tmp_path_factory, teacher_ckpt):
    out = str(tmp_path_factory.mktemp('cache') / 'full')
    cfg = kd_cfg(tmp_path_factory.mktemp('build'), teacher_ckpt)
    build_teacher_cache(cfg, epochs=2, out=out, device='cpu')
    return out


def test_topk_round_trip_against_an_independent_computation():
    torch.manual_seed(0)
    z = torch.randn(6, 10) * 3
    values, classes = encode_topk(z, 3)
    p = z.softmax(1)
    top = p.topk(3, dim=1)
    assert torch.equal(classes.long(), top.indices)
    rec = decode_topk(values, classes, 10).exp()
    assert torch.allclose(rec.sum(1), torch.ones(6), atol=1e-3)
    assert torch.allclose(rec.gather(1, top.indices), top.values, atol=2e-3)
    rest = (1 - top.values.sum(1, keepdim=True)) / 7
    others = torch.ones_like(p, dtype=torch.bool).scatter_(1, top.indices, False)
    assert torch.allclose(rec[others].view(6, 7), rest.expand(6, 7), rtol=1e-2)
    err = topk_error(z, 3)
    kl = (p * (p.log() - rec.log())).sum(1)
    assert np.allclose(err['kl_t1'], kl.tolist(), atol=1e-3)
    assert max(topk_error(z, 9)['kl_t1']) < max(err['kl_t1'])


@pytest.mark.parametrize('num_workers', [0, 2])
def test_cached_run_equals_the_live_teacher_run(tmp_path, teacher_ckpt, full_cache, num_workers):
    # The cache was built with num_workers 0; the runs load with 0 or 2 workers.
    live, _ = train(kd_cfg(tmp_path / 'live', teacher_ckpt, 2, num_workers))
    cached, runner = train(
        kd_cfg(tmp_path / 'cached', teacher_ckpt, 2, num_workers, cache=dict(path=full_cache)))
    assert runner.model.teacher is None, 'a cached run builds no teacher'
    assert len(live) == len(cached) == 8
    for (e0, i0, a), (e1, i1, b) in zip(live, cached):
        assert (e0, i0) == (e1, i1)
        assert a == b, f'epoch {e0} step {i0}: live {a} cached {b}'
    assert live[0][2]['loss_kd'] != live[4][2]['loss_kd']


def test_one_cache_serves_every_logit_method(tmp_path, teacher_ckpt, full_cache):
    # Built for KD, read by NKD, DKD and OFA (whose exit branches read student stages only; the
    # teacher's head width, which sizes them, is given, as the teacher is not built).
    ofa = dict(
        type='OFALoss',
        student_taps=dict(stages=['backbone.layer2', 'backbone.layer3', 'backbone.layer4']))
    cfg = kd_cfg(tmp_path / 'x', teacher_ckpt, methods=[ofa], cache=dict(path=full_cache))
    prepare_stream(cfg)
    with pytest.raises(ValueError, match='set `teacher_final_dims`'):
        Runner.from_cfg(cfg)
    methods = [dict(type='NKDLoss'), dict(type='DKDLoss'), dict(ofa, teacher_final_dims=256)]
    live, _ = train(kd_cfg(tmp_path / 'live', teacher_ckpt, methods=methods))
    cached, _ = train(
        kd_cfg(tmp_path / 'cached', teacher_ckpt, methods=methods, cache=dict(path=full_cache)))
    assert {'loss_nkd_target', 'loss_dkd_tckd', 'loss_ofa_head'} <= set(live[0][2]), live[0][2]
    assert [r[2] for r in live] == [r[2] for r in cached]


def test_resumed_cached_run_reads_the_steps_it_has_not_trained(tmp_path, teacher_ckpt, full_cache):
    work = tmp_path / 'run'
    first, _ = train(kd_cfg(work, teacher_ckpt, 1, cache=dict(path=full_cache)))
    rest, _ = train(kd_cfg(work, teacher_ckpt, 2, cache=dict(path=full_cache)), resume=True)
    live, _ = train(kd_cfg(tmp_path / 'live', teacher_ckpt, 2))
    assert [r[0] for r in rest] == [1] * 4
    assert [r[2] for r in first + rest] == [r[2] for r in live]


def test_topk_cache_is_close_and_reports_its_error(tmp_path, teacher_ckpt):
    out = str(tmp_path / 'top3')
    manifest = build_teacher_cache(kd_cfg(tmp_path, teacher_ckpt), 1, out, topk=3, device='cpu')
    err = manifest['epoch_stats']['0']['topk_error']
    assert set(err) == {'mass_outside', 'kl_t1', 'kl_t4'}
    assert 0 <= err['kl_t1']['mean'] <= err['kl_t1']['max']
    assert osp.getsize(osp.join(out, 'e0000_r000.logprobs.npy')) < 128 * 3 * 2 + 256
    # The stored top-3 log-probabilities are the live teacher's.
    live, cached = tmp_path / 'l', tmp_path / 'c'
    rows_live, _ = train(kd_cfg(live, teacher_ckpt))
    rows_top, runner = train(
        kd_cfg(cached, teacher_ckpt, cache=dict(path=out, verify_every=1, atol=1e-3)))
    assert runner.model.teacher is not None  # verify_every builds it
    gap = [abs(a[2]['loss_kd'] - b[2]['loss_kd']) for a, b in zip(rows_live, rows_top)]
    print(f'top-3 of 10 classes: KL(p || p_K) mean {err["kl_t1"]["mean"]:.4f} at T=1, '
          f'{err["kl_t4"]["mean"]:.4f} at T=4; |loss_kd gap| up to {max(gap):.4f}')
    assert 0 < max(gap)


def test_cache_for_another_run_is_refused_naming_the_field(tmp_path, teacher_ckpt, full_cache):

    def build(cfg):
        prepare_stream(cfg)
        Runner.from_cfg(cfg)

    cfg = kd_cfg(tmp_path, teacher_ckpt, cache=dict(path=full_cache), seed=1)
    with pytest.raises(ValueError, match=r'stream\.seed: cache 0, run 1'):
        build(cfg)
    cfg = kd_cfg(tmp_path, teacher_ckpt, cache=dict(path=full_cache))
    cfg.train_dataloader.batch_size = 16
    with pytest.raises(ValueError, match=r'stream\.batch_size'):
        build(cfg)
    cfg = kd_cfg(tmp_path, teacher_ckpt, cache=dict(path=full_cache))
    cfg.train_dataloader.dataset.pipeline = [dict(type='PackInputs')]
    with pytest.raises(ValueError, match=r'stream\.dataset'):
        build(cfg)
    other = tmp_path / 'other.pth'
    state = torch.load(teacher_ckpt, weights_only=False)
    next(iter(state['state_dict'].values())).add_(1)
    torch.save(state, other)
    with pytest.raises(ValueError, match='teacher_checkpoint: cache'):
        build(kd_cfg(tmp_path, str(other), cache=dict(path=full_cache)))
    cfg = kd_cfg(tmp_path, teacher_ckpt, cache=dict(path=full_cache))
    cfg.model.student = mixing_student()
    cfg.model.student.train_cfg.augments = [dict(type='Mixup', alpha=0.2)]
    with pytest.raises(ValueError, match='student_preprocessor'):
        build(cfg)
    # Without the stream the cache cannot be addressed.
    cfg = kd_cfg(tmp_path, teacher_ckpt, cache=dict(path=full_cache))
    cfg.augment_stream = None
    with pytest.raises(ValueError, match='augment_stream'):
        build(cfg)


def test_feature_methods_refuse_a_cache(tmp_path, teacher_ckpt, full_cache):
    fitnet = dict(
        type='FitNetLoss',
        student_taps=dict(feats='backbone.layer4'),
        teacher_taps=dict(feats='backbone.layer4'))
    cfg = kd_cfg(
        tmp_path,
        teacher_ckpt,
        cache=dict(path=full_cache),
        methods=[dict(type='KDLoss', tau=4.0), fitnet])
    prepare_stream(cfg)
    with pytest.raises(ValueError, match="reads the teacher at \\['backbone.layer4'\\].*feature"):
        Runner.from_cfg(cfg)


def test_verify_every_catches_a_wrong_cache_and_epochs_beyond_it(tmp_path, teacher_ckpt,
                                                                 full_cache):
    import shutil
    bad = str(tmp_path / 'bad')
    shutil.copytree(full_cache, bad)
    logits = np.load(osp.join(bad, 'e0000_r000.logits.npy'), mmap_mode='r+')
    logits[64:96] += 0.5  # step 2 of epoch 0
    logits.flush()
    del logits
    rows, _ = train(kd_cfg(tmp_path / 'a', teacher_ckpt, cache=dict(path=bad, verify_every=3)))
    assert len(rows) == 4, 'steps 0 and 3 are verified, step 2 is not'
    with pytest.raises(RuntimeError, match='disagrees with the live teacher by up to 0.5'):
        train(kd_cfg(tmp_path / 'b', teacher_ckpt, cache=dict(path=bad, verify_every=1)))
    with pytest.raises(KeyError, match='holds epochs \\[0, 1\\], not epoch 2'):
        train(kd_cfg(tmp_path / 'c', teacher_ckpt, 3, cache=dict(path=full_cache)))


def test_build_resumes_and_refuses_another_runs_directory(tmp_path, teacher_ckpt, full_cache):
    out = str(tmp_path / 'resumed')
    cfg = kd_cfg(tmp_path, teacher_ckpt)
    # A build killed after 2 of 4 steps of epoch 0 (flushed every step) ...
    import mmkd_ext.apis.teacher_cache as api

    class Killed(Exception):
        pass

    real = api.TeacherCacheWriter.write

    def write(self, step, indices, logits):
        if step == 2:
            raise Killed
        real(self, step, indices, logits)

    api.TeacherCacheWriter.write = write
    try:
        with pytest.raises(Killed):
            build_teacher_cache(copy.deepcopy(cfg), 1, out, device='cpu', flush_every=1)
    finally:
        api.TeacherCacheWriter.write = real
    with open(osp.join(out, 'e0000_r000.progress.json')) as f:
        assert json.load(f) == {'steps_done': 2}
    # ... continues at step 2 and ends with the same shards as an uninterrupted build.
    build_teacher_cache(copy.deepcopy(cfg), 2, out, device='cpu')
    for e in (0, 1):
        for part in ('indices', 'logits'):
            a = np.load(osp.join(out, f'e000{e}_r000.{part}.npy'))
            b = np.load(osp.join(full_cache, f'e000{e}_r000.{part}.npy'))
            assert np.array_equal(a, b)
    assert TeacherCache(out).epochs == [0, 1]
    with pytest.raises(ValueError, match='another run or storage'):
        build_teacher_cache(copy.deepcopy(cfg), 1, out, topk=3, device='cpu')


def test_compiled_cached_run_gives_the_eager_cached_losses(tmp_path, teacher_ckpt, full_cache):
    # compile=True with a cache: the student pass is compiled, the cache read stays eager.
    eager, _ = train(kd_cfg(tmp_path / 'eager', teacher_ckpt, cache=dict(path=full_cache)))
    cfg = kd_cfg(tmp_path / 'compiled', teacher_ckpt, cache=dict(path=full_cache))
    cfg.compile = dict(backend='aot_eager')
    compiled, runner = train(cfg)
    assert runner.model._compiled_passes is not None and runner.model.teacher is None
    for a, b in zip(eager, compiled):
        assert b[2] == pytest.approx(a[2], rel=1e-4, abs=1e-6)


def test_reader_sees_epochs_a_running_build_adds(tmp_path, full_cache):
    import shutil
    root = str(tmp_path / 'growing')
    shutil.copytree(full_cache, root)
    path = osp.join(root, 'manifest.json')
    manifest = json.load(open(path))
    json.dump(dict(manifest, epochs=[0]), open(path, 'w'))
    cache = TeacherCache(root)
    indices = np.load(osp.join(root, 'e0001_r000.indices.npy'))[:32].tolist()
    with pytest.raises(KeyError, match='holds epochs \\[0\\], not epoch 1'):
        cache.read(1, 0, 0, indices)
    json.dump(manifest, open(path, 'w'))  # the build finished epoch 1
    logits = np.load(osp.join(root, 'e0001_r000.logits.npy'))[:32]
    assert torch.equal(cache.read(1, 0, 0, indices), torch.from_numpy(logits))
