"""A replay cache of a teacher's logits for exactly the batches a training run will see.

With a deterministic augmentation stream (:mod:`mmkd_ext.datasets.augment_stream`) batch ``step``
of rank ``rank`` in epoch ``epoch`` is a fixed function of the config, so the teacher's outputs can
be computed once (``tools/build_teacher_cache.py``) and read back by every run that distils from the
same teacher with the same data: the teacher is then neither built nor run.

Layout of a cache directory::

    manifest.json                      what the outputs depend on (checked against the run)
    e0000_r000.indices.npy             (rows,) int32: the dataset index of every row (a check)
    e0000_r000.logits.npy              full: (rows, C) float32 / float16 logits
    e0000_r000.logprobs.npy            top-K: (rows, K) float16 log-probabilities of the K classes
    e0000_r000.classes.npy             top-K: (rows, K) int16 / int32 class indices

Row ``step * batch_size + j`` is sample ``j`` of batch ``step``. The shards are plain ``.npy``
arrays (no pickle), read through memory maps: one step reads a few contiguous rows.

Top-K is turned back into a distribution the documented way (as TinyViT's sparse soft labels): the
K stored classes keep their exact probabilities, the rest of the mass ``1 - sum_k p_k`` is spread
evenly over the other ``C - K`` classes; the result is given to the losses as log-probabilities
(valid logits: a loss's temperature then softens them like any logits).
"""
import hashlib
import json
import math
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

FORMAT = 'mmkd_ext.teacher_cache/1'
MANIFEST = 'manifest.json'
#: the manifest fields a run is checked against, in the order errors name them
CHECKED = ('teacher_config', 'teacher_checkpoint', 'student_preprocessor', 'tap', 'stream',
           'world_size')


def checkpoint_id(spec: Optional[str]) -> Optional[str]:
    """What identifies a teacher checkpoint: the sha256 of a local file's bytes, or the URL (the
    published OpenMMLab URLs end in a hash of the file)."""
    if spec is None:
        return None
    if '://' in str(spec):
        return str(spec)
    if not osp.isfile(spec):
        raise FileNotFoundError(f'The teacher checkpoint {spec!r} does not exist.')
    h = hashlib.sha256()
    with open(spec, 'rb') as f:
        for block in iter(lambda: f.read(1 << 22), b''):
            h.update(block)
    return 'sha256:' + h.hexdigest()


def shard_path(root: str, epoch: int, rank: int, part: str) -> str:
    return osp.join(root, f'e{epoch:04d}_r{rank:03d}.{part}.npy')


def encode_topk(logits: torch.Tensor, k: int):
    """(B, C) logits -> the K most likely classes: (log-probabilities float16, classes)."""
    logp = F.log_softmax(logits.float(), dim=1)
    values, classes = logp.topk(k, dim=1)
    dtype = torch.int16 if logits.shape[1] <= 2**15 else torch.int32
    return values.half(), classes.to(dtype)


def decode_topk(logprobs: torch.Tensor, classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Top-K log-probabilities (B, K) and classes (B, K) -> (B, C) log-probabilities: the K classes
    exact, the remaining mass spread evenly over the other C - K."""
    logprobs = logprobs.float()
    k = logprobs.shape[1]
    out = logprobs.new_empty(logprobs.shape[0], num_classes)
    if k < num_classes:
        rest = (1 - logprobs.exp().sum(1, keepdim=True)).clamp_min(1e-12)
        out.copy_((rest / (num_classes - k)).log().expand_as(out))
    return out.scatter_(1, classes.long(), logprobs)


def topk_error(logits: torch.Tensor, k: int, taus: Sequence[float] = (1.0, 4.0)) -> Dict[str, list]:
    """Per-sample error of the top-K reconstruction: KL(p || p_K) at each temperature, and the
    probability mass outside the K classes (at T = 1)."""
    logp = F.log_softmax(logits.float(), dim=1)
    rec = decode_topk(*encode_topk(logits, k), logits.shape[1]) if k < logits.shape[1] else logp
    out = {'mass_outside': (1 - logp.topk(k, dim=1).values.exp().sum(1)).clamp_min(0).tolist()}
    for tau in taus:
        p = F.log_softmax(logp / tau, dim=1)
        q = F.log_softmax(rec / tau, dim=1)
        out[f'kl_t{tau:g}'] = F.kl_div(q, p, reduction='none', log_target=True).sum(1).tolist()
    return out


class TeacherCache:
    """Read a teacher cache (see the module docstring).

    Args:
        path (str): the cache directory.
    """

    def __init__(self, path: str):
        self.path = str(path)
        manifest = osp.join(self.path, MANIFEST)
        if not osp.isfile(manifest):
            raise FileNotFoundError(
                f'No teacher cache at {self.path!r} (no {MANIFEST}). Build it with '
                f'`python tools/build_teacher_cache.py CONFIG --epochs E --out {self.path}`.')
        with open(manifest) as f:
            self.manifest = json.load(f)
        if self.manifest.get('format') != FORMAT:
            raise ValueError(f'{manifest} is not a teacher cache of this version (format '
                             f'{self.manifest.get("format")!r}, expected {FORMAT!r}).')
        self.storage = self.manifest['storage']
        self.num_classes = int(self.manifest['num_classes'])
        self.batch_size = int(self.manifest['stream']['batch_size'])
        self._shards: Dict[tuple, dict] = {}

    @property
    def epochs(self) -> List[int]:
        return sorted(int(e) for e in self.manifest.get('epochs', []))

    def mismatches(self, expected: dict) -> List[str]:
        """The fields of ``expected`` (names of :data:`CHECKED`) that differ from the manifest, as
        'field: cache X, run Y' lines."""
        out = []
        for field in CHECKED:
            if field not in expected:
                continue
            have, want = self.manifest.get(field), expected[field]
            if isinstance(want, dict) and isinstance(have, dict):
                out += [
                    f'{field}.{k}: cache {have.get(k)!r}, run {want[k]!r}' for k in sorted(want)
                    if have.get(k) != want[k]
                ]
            elif have != want:
                out.append(f'{field}: cache {have!r}, run {want!r}')
        return out

    def check(self, expected: dict) -> None:
        """Raise a ValueError that names every field in which the run differs from the cache."""
        differ = self.mismatches(expected)
        if differ:
            raise ValueError(
                f'The teacher cache {self.path!r} was built for another run; it differs in:\n  ' +
                '\n  '.join(differ) + '\nRebuild it for this config with '
                '`python tools/build_teacher_cache.py CONFIG --epochs E --out DIR`, or remove '
                '`teacher_cache` to run the teacher live.')

    def _shard(self, epoch: int, rank: int) -> dict:
        key = (epoch, rank)
        if key not in self._shards:
            if epoch not in self.epochs:
                # A build may still be adding epochs while training runs: read the manifest again.
                with open(osp.join(self.path, MANIFEST)) as f:
                    self.manifest['epochs'] = json.load(f).get('epochs', [])
            if epoch not in self.epochs:
                raise KeyError(
                    f'The teacher cache {self.path!r} holds epochs {self.epochs}, not epoch '
                    f'{epoch}: build more with `tools/build_teacher_cache.py CONFIG --epochs '
                    f'{epoch + 1} --out {self.path}` (it resumes).')
            parts = ('indices',
                     'logits') if self.storage['kind'] == 'full' else ('indices', 'logprobs',
                                                                       'classes')
            self._shards[key] = {
                p:
                np.load(shard_path(self.path, epoch, rank, p), mmap_mode='r', allow_pickle=False)
                for p in parts
            }
        return self._shards[key]

    def read(self,
             epoch: int,
             step: int,
             rank: int,
             indices: Sequence[int],
             device=None) -> torch.Tensor:
        """The teacher's (B, C) logits (top-K: log-probabilities) of batch ``step`` of ``rank`` in
        ``epoch``; ``indices`` are the batch's dataset indices, checked against the cache's."""
        shard = self._shard(epoch, rank)
        start = step * self.batch_size
        rows = slice(start, start + len(indices))
        stored = np.asarray(shard['indices'][rows])
        if stored.shape[0] != len(indices) or not np.array_equal(stored, np.asarray(indices)):
            raise RuntimeError(
                f'The teacher cache {self.path!r} holds other samples for epoch {epoch}, step '
                f'{step}, rank {rank} (cache {stored[:8].tolist()}..., batch '
                f'{list(indices)[:8]}...): the data order differs from the build. Rebuild the '
                f'cache for this config.')
        if self.storage['kind'] == 'full':
            out = torch.from_numpy(np.array(shard['logits'][rows])).float()
        else:
            out = decode_topk(
                torch.from_numpy(np.array(shard['logprobs'][rows])),
                torch.from_numpy(np.array(shard['classes'][rows])), self.num_classes)
        return out.to(device) if device is not None else out

    def verify(self, cached: torch.Tensor, live: torch.Tensor, atol: float) -> float:
        """Compare what the cache gave for a batch with the live teacher's logits; return the
        largest difference, raise when it exceeds the tolerance (``atol``, plus float16's rounding
        for top-K)."""
        live = live.detach().float()
        if self.storage['kind'] == 'full':
            diff = (cached.float() - live).abs()
            tol = atol + (2**-10 * live.abs() if self.storage['dtype'] == 'float16' else 0)
        else:
            # Compare the stored classes' log-probabilities (ties may order classes differently).
            k = int(self.storage['k'])
            logp = F.log_softmax(live, dim=1)
            stored, classes = cached.topk(k, dim=1)
            diff = (stored - logp.gather(1, classes)).abs()
            tol = atol + 2**-10 * stored.abs()
        excess = (diff - tol).max()
        worst = float(diff.max())
        if float(excess) > 0:
            raise RuntimeError(
                f'The teacher cache {self.path!r} disagrees with the live teacher by up to '
                f'{worst:.3g} (tolerance {atol:g}): it was built with other weights, inputs or '
                f'precision. Rebuild it, or raise teacher_cache.atol if the difference is '
                f'expected (e.g. a cache built in fp32 read by an AMP run).')
        return worst


class TeacherCacheWriter:
    """Write the shards of one (epoch, rank) of a cache, resumably.

    Shards are written as ``*.partial.npy`` memory maps beside a ``progress.json`` that counts the
    steps done (flushed every ``flush_every`` steps); when all steps are in, they are renamed to
    their final names. A writer opened on a partial shard continues after its last flushed step.

    Args:
        root (str): the cache directory.
        epoch (int): the epoch.
        rank (int): the rank.
        rows (int): rows of the shard (this rank's samples in the epoch).
        num_classes (int): C.
        storage (dict): ``dict(kind='full', dtype='float32')`` or ``dict(kind='topk', k=K)``.
        batch_size (int): rows per step (row ``step * batch_size + j`` is sample j of a step).
        flush_every (int): steps between flushes of the progress. Defaults to 50.
    """

    def __init__(self,
                 root: str,
                 epoch: int,
                 rank: int,
                 rows: int,
                 num_classes: int,
                 storage: dict,
                 batch_size: int,
                 flush_every: int = 50):
        self.root, self.epoch, self.rank = root, epoch, rank
        self.batch_size, self.flush_every = batch_size, flush_every
        self.kind = storage['kind']
        if self.kind == 'full':
            shapes = dict(logits=((rows, num_classes), np.dtype(storage['dtype'])))
        else:
            k = int(storage['k'])
            shapes = dict(
                logprobs=((rows, k), np.float16),
                classes=((rows, k), np.int16 if num_classes <= 2**15 else np.int32))
        shapes['indices'] = ((rows, ), np.int32)
        self.progress_file = shard_path(root, epoch, rank, 'progress')[:-4] + '.json'
        done = 0
        if osp.isfile(self.progress_file):
            with open(self.progress_file) as f:
                done = int(json.load(f)['steps_done'])
        self.steps_done = done
        self.arrays = {}
        for part, (shape, dtype) in shapes.items():
            path = self._partial(part)
            if done and osp.isfile(path):
                arr = np.load(path, mmap_mode='r+', allow_pickle=False)
                if arr.shape != shape or arr.dtype != dtype:
                    raise ValueError(f'{path} has shape {arr.shape} {arr.dtype}, expected '
                                     f'{shape} {dtype}: delete the partial shard.')
            else:
                arr = np.lib.format.open_memmap(path, mode='w+', dtype=dtype, shape=shape)
            self.arrays[part] = arr
        if not all(osp.isfile(self._partial(p)) for p in shapes):
            self.steps_done = 0

    def _partial(self, part: str) -> str:
        return shard_path(self.root, self.epoch, self.rank, part)[:-4] + '.partial.npy'

    def write(self, step: int, indices: Sequence[int], logits: torch.Tensor) -> None:
        """Store batch ``step`` (its dataset indices and the teacher's (B, C) logits)."""
        if step != self.steps_done:
            raise RuntimeError(f'TeacherCacheWriter: step {step} written after step '
                               f'{self.steps_done - 1}; steps go in order.')
        rows = slice(step * self.batch_size, step * self.batch_size + len(indices))
        self.arrays['indices'][rows] = np.asarray(indices, dtype=np.int32)
        logits = logits.detach().float()
        if self.kind == 'full':
            self.arrays['logits'][rows] = logits.cpu().numpy()
        else:
            values, classes = encode_topk(logits, self.arrays['logprobs'].shape[1])
            self.arrays['logprobs'][rows] = values.cpu().numpy()
            self.arrays['classes'][rows] = classes.cpu().numpy()
        self.steps_done += 1
        if self.steps_done % self.flush_every == 0:
            self.flush()

    def flush(self) -> None:
        for arr in self.arrays.values():
            arr.flush()
        tmp = self.progress_file + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(dict(steps_done=self.steps_done), f)
        os.replace(tmp, self.progress_file)

    def finish(self) -> None:
        """Flush and give the shard its final names."""
        self.flush()
        for part, arr in self.arrays.items():
            arr.flush()
            del arr
            os.replace(self._partial(part), shard_path(self.root, self.epoch, self.rank, part))
        self.arrays = {}
        os.remove(self.progress_file)


def steps_per_epoch(samples: int, batch_size: int, drop_last: bool) -> int:
    return samples // batch_size if drop_last else math.ceil(samples / batch_size)
