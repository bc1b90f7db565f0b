"""What one distillation step costs against its floor: time, autograd memory, CUDA peak memory.

The floor of a distillation step is the student's training step (forward + backward + optimizer
step) plus the teacher's forward without gradients up to the last module a method reads; everything
above it is the distiller's and the methods' overhead.

The timings of one :func:`measure` call are taken in one process, interleaved (student, teacher,
distill, student, ...) after a warm-up and summarised by median and interquartile range, so that a
drift of the machine hits all of them alike. :func:`measure_modes` times the student step and the
distillation step the same way in several modes side by side: eager, compiled
(:meth:`Distiller.compile`, the student's own step compiled alike) and under bf16 autocast.
Memory: the bytes autograd saves for backward in each step (exact, from saved-tensor hooks; shows
that no teacher activation is kept) and, on CUDA, the peak allocated above the level before the
step. A CPU peak needs a fresh process (freed memory stays resident in a long-lived one):
``tools/analysis/benchmark.py`` measures it that way.
"""
import copy
import json
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

MB = 2**20


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


class CudaPeakMemory:
    """Peak CUDA memory allocated inside the block above the level at entry.

    Args:
        device (torch.device): a CUDA device.

    Attributes:
        peak (int): bytes, set on exit.
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        if self.device.type != 'cuda':
            raise ValueError(f'CudaPeakMemory measures a CUDA device, got {self.device}; on the '
                             f'CPU use the fresh-process probe of tools/analysis/benchmark.py.')
        self.peak = 0

    def __enter__(self):
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._base = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc):
        torch.cuda.synchronize(self.device)
        self.peak = torch.cuda.max_memory_allocated(self.device) - self._base
        return False


class SavedForBackward:
    """Bytes of the tensors autograd saves for backward inside the block.

    Each storage is counted once (a saved view and its base, or one tensor saved by two ops, share
    it), at its full size.

    Attributes:
        bytes (int): the total, growing while the block runs.
    """

    def __init__(self):
        self.bytes = 0
        self._seen = set()

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. sparse)
            return t
        key = (storage.data_ptr(), t.device)
        if key not in self._seen:
            self._seen.add(key)
            self.bytes += storage.nbytes()
        return t

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def sum_losses(losses: dict) -> torch.Tensor:
    """The optimised total of an OpenMMLab loss dict: every entry whose key contains ``loss``."""
    total = 0
    for key, value in losses.items():
        if 'loss' in key:
            total = total + (sum(value) if isinstance(value, (list, tuple)) else value)
    return total


def param_bytes(params) -> int:
    """Bytes of an iterable of parameters."""
    return sum(p.numel() * p.element_size() for p in params)


def value_bytes(value) -> int:
    """Bytes of the tensors in a tensor, or a (nested) list, tuple or dict of them."""
    if torch.is_tensor(value):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(value_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(value_bytes(v) for v in value.values())
    return 0


def summarise(ms: Sequence[float]) -> dict:
    """Median, quartiles, minimum and count of a list of timings."""
    q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0]] * 3
    return dict(median=statistics.median(ms), q1=q[0], q3=q[2], min=min(ms), n=len(ms))


def make_batch(distiller: nn.Module, batch: int, image_size: Sequence[int],
               device) -> Tuple[torch.Tensor, list]:
    """Random inputs in the distiller's channel count and classification labels.

    Args:
        distiller (Distiller): gives ``input_shape[0]`` (C) and the student head's
            ``num_classes`` (10 if it has none).
        batch (int): B.
        image_size (Sequence[int]): (H, W).
        device (str | torch.device): where the inputs live.

    Returns:
        tuple: inputs (B, C, H, W) and B mmpretrain ``DataSample`` with a label each.
    """
    from mmpretrain.structures import DataSample
    channels = distiller.input_shape[0]
    inputs = torch.randn(batch, channels, *image_size, device=device)
    num_classes = getattr(getattr(distiller.student, 'head', None), 'num_classes', 10)
    samples = [DataSample().set_gt_label(i % num_classes) for i in range(batch)]
    return inputs, samples


class StepBench:
    """The steps to compare, on one batch: student step, teacher forward, distillation step.

    Args:
        distiller (Distiller): in train mode, on the device of ``inputs``.
        inputs (torch.Tensor): (B, C, H, W).
        samples (list): B data samples.
        amp (bool): run under autocast (float16 on CUDA, bfloat16 on the CPU). Defaults to False.
        amp_dtype (torch.dtype, optional): the autocast dtype when ``amp``; None: the default
            above. Defaults to None.
        compile_options (dict, optional): compile the distiller's passes with these
            ``torch.compile`` options (:meth:`Distiller.compile`) and the student's own step alike;
            None: eager. Defaults to None.
    """

    def __init__(self,
                 distiller: nn.Module,
                 inputs: torch.Tensor,
                 samples: list,
                 amp: bool = False,
                 amp_dtype: Optional[torch.dtype] = None,
                 compile_options: Optional[dict] = None):
        self.d, self.inputs, self.samples = distiller, inputs, samples
        self.device = inputs.device
        self.amp = amp
        self.amp_dtype = amp_dtype or (torch.bfloat16
                                       if self.device.type == 'cpu' else torch.float16)
        self.student_loss = distiller.student.loss
        if compile_options is not None:
            distiller.compile(**compile_options)
            self.student_loss = torch.compile(distiller.student.loss, **compile_options)
        # A tiny lr: the weights barely move, so every timed step does the same work.
        self.opt_student = torch.optim.SGD(distiller.student.parameters(), lr=1e-6)
        self.opt_all = torch.optim.SGD(distiller.parameters(), lr=1e-6)

    def _autocast(self):
        return torch.autocast(self.device.type, enabled=self.amp, dtype=self.amp_dtype)

    def student(self) -> None:
        """The student's own training step: forward, backward, SGD step."""
        self.opt_student.zero_grad(set_to_none=True)
        with self._autocast():
            loss = sum_losses(self.student_loss(self.inputs, self.samples))
        loss.backward()
        self.opt_student.step()

    def teacher(self) -> None:
        """The teacher's forward as the distiller runs it: up to its last tap."""
        with self._autocast():
            self.d.teacher_features(self.inputs, self.samples)

    def teacher_full(self) -> None:
        """The teacher's whole forward without gradients (what truncation saves against)."""
        with torch.no_grad(), self._autocast():
            self.d.teacher(self.d.teacher_inputs(self.inputs), self.samples, mode='tensor')

    def distill(self) -> None:
        """The distillation step: forward, backward, SGD step on student and methods."""
        self.opt_all.zero_grad(set_to_none=True)
        with self._autocast():
            loss = sum_losses(self.d.loss(self.inputs, self.samples))
        loss.backward()
        self.opt_all.step()


def time_ms(fn: Callable[[], None], device) -> float:
    """Wall time of one call of ``fn`` in milliseconds, the device synchronised around it."""
    device = torch.device(device)
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - t0) * 1e3


def time_interleaved(fns: Dict[str, Callable[[], None]], device, iters: int,
                     warmup: int) -> Dict[str, dict]:
    """Time every function ``iters`` times, interleaved, after ``warmup`` rounds.

    Returns:
        dict: {name: :func:`summarise` of its timings in ms}.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            times[name].append(time_ms(fn, device))
    return {name: summarise(v) for name, v in times.items()}


def _as_leaf(value, requires_grad: bool):
    if torch.is_tensor(value):
        leaf = value.detach()
        return leaf.requires_grad_(requires_grad and leaf.is_floating_point())
    if isinstance(value, (list, tuple)):
        return type(value)(_as_leaf(v, requires_grad) for v in value)
    if isinstance(value, dict):
        return {k: _as_leaf(v, requires_grad) for k, v in value.items()}
    return value


def capture_method_inputs(distiller: nn.Module, inputs: torch.Tensor, samples: list) -> list:
    """The arguments each method of ``distiller`` receives in one distillation forward.

    Returns:
        list: one ``(args, kwargs)`` per method, in ``distiller.methods`` order, with student
        features as fresh leaves that require grad and teacher features detached, so that each
        method can be run (and back-propagated) alone, repeatedly.
    """
    captured = {}

    def hook(module, args, kwargs):
        captured[id(module)] = (args, kwargs)

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in distiller.methods]
    try:
        with torch.no_grad():
            distiller.loss(inputs, samples)
    finally:
        for h in handles:
            h.remove()
    out = []
    for m in distiller.methods:
        (s_feats, t_feats, *rest), kwargs = captured[id(m)]
        out.append(((_as_leaf(s_feats, True), _as_leaf(t_feats, False), *rest), kwargs))
    return out


def method_costs(distiller: nn.Module,
                 inputs: torch.Tensor,
                 samples: list,
                 repeats: int = 5) -> List[dict]:
    """Forward + backward time of each method alone, on the features of one distillation forward.

    Args:
        distiller (Distiller): the distiller whose ``methods`` are timed.
        inputs (torch.Tensor): (B, C, H, W).
        samples (list): B data samples.
        repeats (int): timed calls per method after one warm-up call; the median is reported.
            Defaults to 5.

    Returns:
        list[dict]: per method ``name``, ``type``, ``ms`` (median) and ``trainable_params``.
    """
    rows = []
    for method, (args, kwargs) in zip(distiller.methods,
                                      capture_method_inputs(distiller, inputs, samples)):

        def step():
            sum_losses(method(*args, **kwargs)).backward()

        times = [time_ms(step, inputs.device) for _ in range(repeats + 1)][1:]
        rows.append(
            dict(
                name=method.name,
                type=type(method).__name__,
                ms=statistics.median(times),
                trainable_params=sum(p.numel() for p in method.parameters() if p.requires_grad)))
    return rows


def measure(distiller: nn.Module,
            batch: int,
            image_size: Sequence[int],
            device,
            iters: int = 10,
            warmup: int = 3,
            amp: bool = False,
            memory: bool = True) -> dict:
    """Time student step, teacher forward and distillation step; measure their memory.

    Args:
        distiller (Distiller): in train mode, on ``device``.
        batch (int): B of the random batch.
        image_size (Sequence[int]): (H, W) of the random batch.
        device (str | torch.device): where the distiller is.
        iters (int): timed steps of each kind. Defaults to 10.
        warmup (int): untimed rounds first. Defaults to 3.
        amp (bool): autocast. Defaults to False.
        memory (bool): also measure memory (saved for backward, CUDA peaks, sizes).
            Defaults to True.

    Returns:
        dict: ``times_ms`` ({step: summary}), ``floor_ms``, ``overhead_ratio`` (distill / floor),
        ``teacher_truncation_saves_ms`` and, with ``memory``, ``memory`` (MB).
    """
    device = torch.device(device)
    inputs, samples = make_batch(distiller, batch, image_size, device)
    bench = StepBench(distiller, inputs, samples, amp)
    steps = dict(student=bench.student, teacher=bench.teacher, distill=bench.distill)
    times = time_interleaved(steps, device, iters, warmup)
    times['teacher_full'] = time_interleaved(
        dict(teacher_full=bench.teacher_full), device, max(3, iters // 3), 1)['teacher_full']
    out = dict(batch=batch, image_size=list(image_size), times_ms=times)
    t = {name: summary['median'] for name, summary in times.items()}
    out['floor_ms'] = t['student'] + t['teacher']
    out['overhead_ratio'] = t['distill'] / out['floor_ms']
    out['teacher_truncation_saves_ms'] = t['teacher_full'] - t['teacher']
    if memory:
        mem = {}
        for name, fn in steps.items():
            with SavedForBackward() as saved:
                if device.type == 'cuda':
                    with CudaPeakMemory(device) as peak:
                        fn()
                else:
                    fn()
            mem[name] = dict(saved_for_backward_mb=saved.bytes / MB)
            if device.type == 'cuda':
                mem[name]['peak_mb'] = peak.peak / MB
        mem['teacher_weights_mb'] = param_bytes(distiller.teacher.parameters()) / MB
        mem['teacher_taps_mb'] = value_bytes(distiller.teacher_features(inputs, samples)) / MB
        mem['method_params_mb'] = param_bytes(distiller.methods.parameters()) / MB
        # The distillation step may keep more than the student's step only by what the methods
        # keep (projector inputs and outputs), never teacher activations.
        mem['distill_minus_student_saved_mb'] = (
            mem['distill']['saved_for_backward_mb'] - mem['student']['saved_for_backward_mb'])
        out['memory'] = mem
    return out


def measure_cached(distiller: nn.Module,
                   batch: int,
                   image_size: Sequence[int],
                   device,
                   iters: int = 10,
                   warmup: int = 3,
                   topk: Optional[int] = None,
                   steps: int = 8) -> dict:
    """Time the distillation step with the teacher's logits read from a teacher cache, beside the
    student's own step and the live distillation step (interleaved, as :func:`measure`).

    A cache of ``steps`` batches is written to a temporary directory with the real writer (the
    teacher's logits of the random batch, full or top-K) and attached to the distiller, whose
    ``loss`` then reads it by the batches' stream keys exactly as in a cached training run
    (``Distiller.cached_teacher_features``); each timed step reads the next cached batch.

    Args:
        distiller (Distiller): a live distiller whose methods read only the teacher's logits.
        topk (int, optional): store K classes instead of full float32 logits. Defaults to None.
        steps (int): cached batches to cycle through. Defaults to 8.

    Returns:
        dict: ``times_ms`` (student, distill, cached), ``cached_over_student``,
        ``cached_over_distill``, ``build_ms_per_step`` (teacher forward + encoding + write),
        ``bytes_per_sample`` (what one sample costs on disk per epoch) and ``storage``.
    """
    import os.path as osp
    import tempfile

    from mmkd_ext.datasets.augment_stream import StreamKey
    from mmkd_ext.distillers.teacher_cache import (FORMAT, MANIFEST, TeacherCache,
                                                   TeacherCacheWriter, shard_path)
    device = torch.device(device)
    if distiller.teacher_taps is None or len(distiller.teacher_taps.paths) != 1:
        raise ValueError('measure_cached needs a live distiller whose methods read one teacher '
                         'tap (the logits).')
    tap = distiller.teacher_taps.paths[0]
    inputs, samples = make_batch(distiller, batch, image_size, device)
    bench = StepBench(distiller, inputs, samples)
    with torch.no_grad():
        logits = distiller.teacher_features(inputs, samples)[tap]
    num_classes = int(logits.shape[1])
    storage = dict(kind='topk', k=int(topk)) if topk else dict(kind='full', dtype='float32')
    keyed = [[copy.deepcopy(s) for s in samples] for _ in range(steps)]
    for step, group in enumerate(keyed):
        for j, s in enumerate(group):
            s.set_metainfo(dict(stream_key=tuple(StreamKey(0, step, 0, step * batch + j))))
    with tempfile.TemporaryDirectory() as root:
        writer = TeacherCacheWriter(root, 0, 0, steps * batch, num_classes, storage, batch)
        build = []
        for step in range(steps):
            t0 = time.perf_counter()
            with torch.no_grad():
                out = distiller.teacher_features(inputs, samples)[tap]
            writer.write(step, range(step * batch, (step + 1) * batch), out)
            build.append((time.perf_counter() - t0) * 1e3)
        writer.finish()
        nbytes = sum(
            osp.getsize(shard_path(root, 0, 0, p)) - 128  # minus the .npy header
            for p in ('indices', 'logits', 'logprobs', 'classes')
            if osp.isfile(shard_path(root, 0, 0, p)))
        manifest = dict(
            format=FORMAT,
            tap=tap,
            num_classes=num_classes,
            storage=storage,
            stream=dict(batch_size=batch),
            world_size=1,
            epochs=[0])
        with open(osp.join(root, MANIFEST), 'w') as f:
            json.dump(manifest, f)
        cache, cursor = TeacherCache(root), [0]
        saved = distiller.teacher_cache, getattr(distiller, 'cache_verify_every', 0)

        def cached() -> None:
            # The cache is attached for this step only: the live step runs the teacher.
            group = keyed[cursor[0] % steps]
            cursor[0] += 1
            distiller.teacher_cache, distiller.cache_verify_every = cache, 0
            try:
                bench.opt_all.zero_grad(set_to_none=True)
                sum_losses(distiller.loss(inputs, group)).backward()
                bench.opt_all.step()
            finally:
                distiller.teacher_cache, distiller.cache_verify_every = saved

        times = time_interleaved(
            dict(student=bench.student, distill=bench.distill, cached=cached), device, iters,
            warmup)
    t = {name: s['median'] for name, s in times.items()}
    return dict(
        batch=batch,
        image_size=list(image_size),
        storage=storage,
        times_ms=times,
        cached_over_student=t['cached'] / t['student'],
        cached_over_distill=t['cached'] / t['distill'],
        build_ms_per_step=statistics.median(build),
        bytes_per_sample=nbytes / (steps * batch))


MODES = ('eager', 'compile', 'bf16')


def measure_modes(distiller: nn.Module,
                  batch: int,
                  image_size: Sequence[int],
                  device,
                  modes: Sequence[str] = MODES,
                  iters: int = 10,
                  warmup: int = 3,
                  compile_options: Optional[dict] = None) -> Dict[str, dict]:
    """Time the student step and the distillation step in each mode, interleaved.

    Modes: ``eager`` (float32), ``compile`` (the distiller's passes and the student's own step
    compiled; measured on a deep copy, which shares the teacher, so ``distiller`` stays eager) and
    ``bf16`` (eager under bfloat16 autocast, on the CPU as on CUDA).

    Args:
        distiller (Distiller): in train mode, on ``device``.
        batch (int): B of the random batch.
        image_size (Sequence[int]): (H, W) of the random batch.
        device (str | torch.device): where the distiller is.
        modes (Sequence[str]): some of :data:`MODES`. Defaults to all.
        iters (int): timed steps of each kind and mode. Defaults to 10.
        warmup (int): untimed rounds after the first call. Defaults to 3.
        compile_options (dict, optional): ``torch.compile`` options of the ``compile`` mode.
            Defaults to None (torch.compile's defaults).

    Returns:
        dict: {mode: dict(student=summary, distill=summary, first_call_ms=dict(student=ms,
        distill=ms))}, summaries as :func:`summarise` (ms); the first call of the ``compile``
        mode includes the compilation.
    """
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f'Unknown mode(s) {unknown}: choose from {list(MODES)}.')
    device = torch.device(device)
    inputs, samples = make_batch(distiller, batch, image_size, device)
    benches = {}
    for mode in modes:
        if mode == 'compile':
            benches[mode] = StepBench(
                copy.deepcopy(distiller), inputs, samples, compile_options=compile_options or {})
        else:
            benches[mode] = StepBench(
                distiller, inputs, samples, amp=mode == 'bf16', amp_dtype=torch.bfloat16)
    fns = {
        (mode, kind): getattr(bench, kind)
        for mode, bench in benches.items()
        for kind in ('student', 'distill')
    }
    first = {key: time_ms(fn, device) for key, fn in fns.items()}
    times = time_interleaved({f'{m}/{k}': fn for (m, k), fn in fns.items()}, device, iters, warmup)
    return {
        mode:
        dict(
            student=times[f'{mode}/student'],
            distill=times[f'{mode}/distill'],
            first_call_ms=dict(student=first[(mode, 'student')], distill=first[(mode, 'distill')]))
        for mode in modes
    }
