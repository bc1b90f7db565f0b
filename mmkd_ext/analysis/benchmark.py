"""What a distillation step costs against its floor: time, memory and extra parameters.

The floor of a distillation step is: student forward + backward (+ optimizer step), plus the teacher
forward without gradients up to the last module a method reads. Everything above it is the
distiller's and the methods' overhead.

All timings of one call are taken in one process, interleaved (student, teacher, distill, student,
...) after a warm-up, and summarised by median and interquartile range, so that drifts of the machine
hit all of them alike. Memory is reported two ways: the bytes autograd saves for backward during each
step (exact; shows that no teacher activation is kept), and the peak memory of each step above the
level before it: on CUDA the max allocated; on the CPU the sampled resident memory (RSS) of a fresh
child process whose allocator returns every large block to the system
(``MALLOC_MMAP_THRESHOLD_``), since in a long-lived process freed memory stays resident and a
step's peak would not show.
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


class PeakMemory:
    """Peak memory above the level at entry: CUDA max allocated, or sampled CPU RSS."""

    def __init__(self, device):
        self.device = device
        self.peak = 0

    def __enter__(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.base = _rss_bytes()
            self._stop = False
            self._max = self.base

            def sample():
                while not self._stop:
                    self._max = max(self._max, _rss_bytes())
                    time.sleep(0.0005)
            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self._stop = True
            self._thread.join()
            self._max = max(self._max, _rss_bytes())
            self.peak = self._max - self.base
        return False


class SavedForBackward:
    """Bytes of the tensors autograd saves for backward inside the block (distinct storages)."""

    def __init__(self):
        self.bytes = 0
        self._seen = set()

    def _pack(self, t):
        try:
            key = (t.untyped_storage().data_ptr(), t.device)
            if key not in self._seen:
                self._seen.add(key)
                self.bytes += t.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _sum_losses(losses: dict) -> torch.Tensor:
    total = 0
    for k, v in losses.items():
        if 'loss' in k:
            total = total + (sum(v) if isinstance(v, (list, tuple)) else v)
    return total


def _param_bytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def _value_bytes(v) -> int:
    if torch.is_tensor(v):
        return v.numel() * v.element_size()
    if isinstance(v, (list, tuple)):
        return sum(_value_bytes(x) for x in v)
    if isinstance(v, dict):
        return sum(_value_bytes(x) for x in v.values())
    return 0


def _summary(ms: List[float]) -> dict:
    q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0]] * 3
    return dict(median=statistics.median(ms), q1=q[0], q3=q[2], min=min(ms), n=len(ms))


def make_batch(distiller, batch: int, image_size: Sequence[int], device):
    """Random inputs (B, C, H, W) in the distiller's channel count and classification labels."""
    channels = distiller.input_shape[0]
    inputs = torch.randn(batch, channels, *image_size, device=device)
    from mmpretrain.structures import DataSample
    num_classes = getattr(getattr(distiller.student, 'head', None), 'num_classes', 10)
    samples = [DataSample().set_gt_label(int(i) % num_classes) for i in range(batch)]
    return inputs, samples


class StepBench:
    """The three steps to compare, on one batch."""

    def __init__(self, distiller, inputs, samples, amp: bool = False):
        self.d, self.inputs, self.samples = distiller, inputs, samples
        self.device = inputs.device
        self.amp = amp
        self.opt_student = torch.optim.SGD(distiller.student.parameters(), lr=1e-6)
        self.opt_all = torch.optim.SGD(distiller.parameters(), lr=1e-6)

    def _autocast(self):
        return torch.autocast(self.device.type, enabled=self.amp,
                              dtype=torch.bfloat16 if self.device.type == 'cpu' else torch.float16)

    def student(self):
        self.opt_student.zero_grad(set_to_none=True)
        with self._autocast():
            loss = _sum_losses(self.d.student.loss(self.inputs, self.samples))
        loss.backward()
        self.opt_student.step()

    def teacher(self):
        with self._autocast():
            self.d.teacher_features(self.inputs, self.samples)

    def teacher_full(self):
        with torch.no_grad(), self._autocast():
            self.d.teacher(self.inputs, self.samples, mode='tensor')

    def distill(self):
        self.opt_all.zero_grad(set_to_none=True)
        with self._autocast():
            loss = _sum_losses(self.d.loss(self.inputs, self.samples))
        loss.backward()
        self.opt_all.step()

    def timed(self, fn) -> float:
        _sync(self.device)
        t0 = time.perf_counter()
        fn()
        _sync(self.device)
        return (time.perf_counter() - t0) * 1e3


def method_costs(distiller, inputs, samples, repeats: int = 5) -> List[dict]:
    """Forward + backward time of each method alone on features captured once (ms, median)."""
    from mmkd_ext.distillers.distiller import _select
    t_store = distiller.teacher_features(inputs, samples)
    with torch.no_grad(), distiller.student_taps.record() as s_store:
        distiller.student.loss(inputs, samples)

    def leaf(v):
        if torch.is_tensor(v):
            return v.detach().requires_grad_(v.is_floating_point())
        if isinstance(v, (list, tuple)):
            return type(v)(leaf(x) for x in v)
        return v
    s_store = {k: leaf(v) for k, v in s_store.items()}
    rows = []
    for m in distiller.methods:
        s_feats = _select(m.student_taps, s_store)
        t_feats = _select(m.teacher_taps, t_store)
        times = []
        for _ in range(repeats + 1):
            _sync(inputs.device)
            t0 = time.perf_counter()
            loss = _sum_losses(m(s_feats, t_feats, samples))
            loss.backward()
            _sync(inputs.device)
            times.append((time.perf_counter() - t0) * 1e3)
        rows.append(dict(name=m.name, type=type(m).__name__, ms=statistics.median(times[1:]),
                         trainable_params=sum(p.numel() for p in m.parameters()
                                              if p.requires_grad)))
    return rows


def measure(distiller, batch: int, image_size: Sequence[int], device, iters: int = 10,
            warmup: int = 3, amp: bool = False, memory: bool = True) -> dict:
    """Time (and measure memory of) student step, teacher forward and distillation step."""
    inputs, samples = make_batch(distiller, batch, image_size, device)
    bench = StepBench(distiller, inputs, samples, amp)
    names = ['student', 'teacher', 'distill']
    fns = dict(student=bench.student, teacher=bench.teacher, distill=bench.distill,
               teacher_full=bench.teacher_full)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times: Dict[str, List[float]] = {n: [] for n in names + ['teacher_full']}
    for _ in range(iters):
        for n in names:
            times[n].append(bench.timed(fns[n]))
    for _ in range(max(3, iters // 3)):
        times['teacher_full'].append(bench.timed(fns['teacher_full']))
    out = dict(batch=batch, image_size=list(image_size),
               times_ms={n: _summary(v) for n, v in times.items()})
    t = {n: out['times_ms'][n]['median'] for n in times}
    out['floor_ms'] = t['student'] + t['teacher']
    out['overhead_ratio'] = t['distill'] / out['floor_ms']
    out['teacher_truncation_saves_ms'] = t['teacher_full'] - t['teacher']
    if memory:
        mem = {}
        for n in names:
            with SavedForBackward() as saved, PeakMemory(device) as peak:
                fns[n]()
            mem[n] = dict(saved_for_backward_mb=saved.bytes / 2**20, peak_mb=peak.peak / 2**20)
        t_store = distiller.teacher_features(inputs, samples)
        mem['teacher_weights_mb'] = _param_bytes(distiller.teacher.parameters()) / 2**20
        mem['teacher_taps_mb'] = _value_bytes(t_store) / 2**20
        mem['method_params_mb'] = _param_bytes(distiller.methods.parameters()) / 2**20
        # Saved-for-backward of the distillation step may exceed the student's only by what the
        # methods keep (projector inputs/outputs, taps); never by teacher activations.
        mem['distill_minus_student_saved_mb'] = (mem['distill']['saved_for_backward_mb'] -
                                                 mem['student']['saved_for_backward_mb'])
        out['memory'] = mem
    return out


def build_distiller_from_config(config: str, size: int, keep_checkpoint: bool = False,
                                cfg_options: Optional[dict] = None):
    """The distiller of a distillation config, with a (C, size, size) dry run; the teacher keeps
    its initial weights unless ``keep_checkpoint`` (speed does not depend on them)."""
    from mmengine.registry import MODELS as MMENGINE_MODELS

    from mmkd_ext.apis.runner import is_distiller
    from mmkd_ext.utils.config import load_config
    model = load_config(config, cfg_options, activate=True).model
    if not is_distiller(model):
        raise ValueError(f'{config} is not a distillation config (model.type is {model.type}).')
    if not keep_checkpoint:
        model.teacher_checkpoint = None
    channels = model.get('input_shape', (3, 224, 224))[0]
    model.input_shape = (channels, size, size)
    return MMENGINE_MODELS.build(model)


def _probe_cpu_peaks(config, size, batch, keep_checkpoint, cfg_options):
    """Run in the fresh child process: the peak RSS of each step kind above the level before it."""
    import mmkd_ext  # noqa: F401
    distiller = build_distiller_from_config(config, size, keep_checkpoint, cfg_options).train()
    device = torch.device('cpu')
    inputs, samples = make_batch(distiller, batch, (size, size), device)
    bench = StepBench(distiller, inputs, samples)
    out = {}
    for kind in ('student', 'teacher', 'distill'):
        fn = getattr(bench, kind)
        fn()  # warm-up: one-time allocations (thread pools, optimizer state)
        with PeakMemory(device) as peak:
            fn()
        out[kind] = peak.peak / 2**20
    return out


def fresh_process_cpu_peaks(config: str, size: int, batch: int, keep_checkpoint: bool = False,
                            cfg_options: Optional[dict] = None) -> dict:
    """{'student'|'teacher'|'distill': peak MB above the level before the step}, measured in a
    fresh child process with every large block mmap-ed (freed memory leaves RSS at once)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536', MALLOC_TRIM_THRESHOLD_='0',
               OMP_NUM_THREADS=str(torch.get_num_threads()))
    code = ('import json, sys; from mmkd_ext.analysis.benchmark import _probe_cpu_peaks; '
            'print("PEAKS" + json.dumps(_probe_cpu_peaks(*json.loads(sys.argv[1]))))')
    args = json.dumps([config, size, batch, keep_checkpoint, cfg_options])
    proc = subprocess.run([sys.executable, '-c', code, args], env=env, capture_output=True,
                          text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith('PEAKS')]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f'memory probe failed:\n{proc.stderr[-3000:]}')
    return json.loads(lines[-1][len('PEAKS'):])


def machine_info(device) -> dict:
    info = dict(python=platform.python_version(), torch=torch.__version__,
                machine=platform.machine(), cpu_count=os.cpu_count(),
                torch_threads=torch.get_num_threads(), device=str(device))
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    info['cpu'] = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info


def run_benchmark(distiller: nn.Module, batch: int = 8, image_size: Sequence[int] = (224, 224),
                  device: str = 'cpu', iters: int = 10, warmup: int = 3,
                  sweep_batches: Sequence[int] = (), sweep_sizes: Sequence[int] = (),
                  sweep_iters: Optional[int] = None) -> dict:
    """The whole benchmark of one distiller: the main point, the sweeps, AMP on CUDA."""
    device = torch.device(device)
    distiller.to(device).train()
    result = dict(machine=machine_info(device))
    result['main'] = measure(distiller, batch, image_size, device, iters, warmup)
    inputs, samples = make_batch(distiller, batch, image_size, device)
    result['methods'] = method_costs(distiller, inputs, samples)
    result['params'] = dict(
        student=sum(p.numel() for p in distiller.student.parameters()),
        teacher=sum(p.numel() for p in distiller.teacher.parameters()),
        extra_trainable=sum(p.numel() for p in distiller.methods.parameters() if p.requires_grad))
    s_iters = sweep_iters or max(3, iters // 2)
    result['sweep_batch'] = [
        _sweep_row(measure(distiller, b, image_size, device, s_iters, 1, memory=False))
        for b in sweep_batches]
    result['sweep_size'] = [
        _sweep_row(measure(distiller, batch, (s, s), device, s_iters, 1, memory=False))
        for s in sweep_sizes]
    if device.type == 'cuda':
        result['images_per_s'] = {}
        for amp in (False, True):
            m = measure(distiller, batch, image_size, device, iters, warmup, amp=amp, memory=False)
            result['images_per_s']['amp' if amp else 'fp32'] = dict(
                student=batch / m['times_ms']['student']['median'] * 1e3,
                distill=batch / m['times_ms']['distill']['median'] * 1e3)
    return result


def _sweep_row(m: dict) -> dict:
    t = {n: v['median'] for n, v in m['times_ms'].items()}
    return dict(batch=m['batch'], image_size=m['image_size'][0], student_ms=t['student'],
                teacher_ms=t['teacher'], distill_ms=t['distill'], floor_ms=m['floor_ms'],
                overhead_ratio=m['overhead_ratio'])


def plot_sweeps(result: dict, path: str, title: str = ''):
    """Step time against batch size and against image size, one PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, x_name in ((axes[0], 'sweep_batch', 'batch'), (axes[1], 'sweep_size',
                                                                'image_size')):
        rows = result.get(key) or []
        xs = [r[x_name] for r in rows]
        for col, label in (('student_ms', 'student step'), ('floor_ms', 'floor'),
                           ('distill_ms', 'distillation step')):
            ax.plot(xs, [r[col] for r in rows], marker='o', label=label)
        ax.set_xlabel(x_name.replace('_', ' '))
        ax.set_ylabel('ms per step (median)')
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
