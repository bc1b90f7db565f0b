"""Benchmark distillation configs: step time against its floor, memory, parameters, scaling.

    python tools/analysis/benchmark.py CONFIG [CONFIG ...] [--batch 8] [--size 224] [--iters 10]
        [--sweep-batch 2 4 8] [--sweep-size 112 160 224] [--device cpu|cuda] [--out-dir DIR]
        [--markdown docs/benchmark.md] [--cached] [--cached-topk 10] [--modes eager compile bf16]
        [--compile-backend inductor]

The teacher keeps its initial weights unless --keep-checkpoint is given (speed does not depend on
the weights, and tests and fresh machines have none). For each config it prints a table, writes
DIR/<config>.json and DIR/<config>_sweep.png; with --markdown it writes one table for all configs.
--modes also times the student step and the distillation step eager, compiled (Distiller.compile)
and under bf16 autocast, side by side (JSON key "modes", one more table).
The measuring primitives are mmkd_ext.analysis.step_cost; this harness adds the sweeps, the CPU
peak memory of a fresh process (cpu_peak_probe.py), the machine description and the rendering
(benchmark_report.py).
"""
import argparse
import json
import os
import os.path as osp
import platform
import re
import sys
from typing import Optional, Sequence

import torch
from mmengine.config import DictAction

import mmkd_ext  # noqa: F401  (registries)
from mmkd_ext.analysis.step_cost import (MODES, make_batch, measure, measure_cached, measure_modes,
                                         method_costs)

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # the helpers beside this script
from benchmark_report import markdown, plot_sweeps, print_table  # noqa: E402
from cpu_peak_probe import fresh_process_cpu_peaks  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Distillation overhead benchmark')
    p.add_argument('configs', nargs='+')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--size', type=int, default=224, help='image size (square)')
    p.add_argument('--iters', type=int, default=10, help='timed iterations per step kind')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--sweep-batch', type=int, nargs='*', default=[2, 4, 8])
    p.add_argument('--sweep-size', type=int, nargs='*', default=[112, 160, 224])
    p.add_argument('--sweep-only', help='regex: sweep only the configs whose name matches')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, help='torch CPU threads (default: torch default)')
    p.add_argument('--out-dir', default='work_dirs/benchmark')
    p.add_argument('--markdown', help='also write a markdown table for all configs here')
    p.add_argument(
        '--keep-checkpoint', action='store_true', help='load the teacher checkpoint of the config')
    p.add_argument(
        '--render-only',
        action='store_true',
        help='do not measure: rewrite --markdown from the JSON files in --out-dir')
    p.add_argument(
        '--cached',
        action='store_true',
        help='also time the distillation step with the teacher replayed from a full-logit cache')
    p.add_argument(
        '--cached-topk',
        type=int,
        nargs='*',
        default=[],
        help='... and from top-K caches for each K given (implies --cached)')
    p.add_argument(
        '--cached-only',
        help='regex: the cached modes only for the configs whose name matches (configs whose '
        'methods read teacher features are always skipped)')
    p.add_argument(
        '--modes',
        nargs='*',
        choices=MODES,
        default=[],
        help='also time student and distillation steps in these modes, side by side')
    p.add_argument(
        '--compile-backend', default='inductor', help='torch.compile backend of the compile mode')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def build_distiller_from_config(config: str,
                                size: int,
                                keep_checkpoint: bool = False,
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


def machine_info(device: torch.device) -> dict:
    """Python, torch, CPU model (from /proc/cpuinfo), core and thread counts, GPU name."""
    info = dict(
        python=platform.python_version(),
        torch=torch.__version__,
        machine=platform.machine(),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        device=str(device))
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


def _sweep_row(m: dict) -> dict:
    t = {n: v['median'] for n, v in m['times_ms'].items()}
    return dict(
        batch=m['batch'],
        image_size=m['image_size'][0],
        student_ms=t['student'],
        teacher_ms=t['teacher'],
        distill_ms=t['distill'],
        floor_ms=m['floor_ms'],
        overhead_ratio=m['overhead_ratio'])


def run_benchmark(distiller,
                  batch: int = 8,
                  image_size: Sequence[int] = (224, 224),
                  device: str = 'cpu',
                  iters: int = 10,
                  warmup: int = 3,
                  sweep_batches: Sequence[int] = (),
                  sweep_sizes: Sequence[int] = (),
                  sweep_iters: Optional[int] = None,
                  modes: Sequence[str] = (),
                  compile_backend: str = 'inductor') -> dict:
    """The whole benchmark of one distiller: the main point, the sweeps, AMP on CUDA, the
    modes."""
    device = torch.device(device)
    distiller.to(device).train()
    result = dict(machine=machine_info(device), settings=dict(iters=iters, warmup=warmup))
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
        for b in sweep_batches
    ]
    result['sweep_size'] = [
        _sweep_row(measure(distiller, batch, (s, s), device, s_iters, 1, memory=False))
        for s in sweep_sizes
    ]
    if device.type == 'cuda':
        result['images_per_s'] = {}
        for amp in (False, True):
            m = measure(distiller, batch, image_size, device, iters, warmup, amp=amp, memory=False)
            result['images_per_s']['amp' if amp else 'fp32'] = dict(
                student=batch / m['times_ms']['student']['median'] * 1e3,
                distill=batch / m['times_ms']['distill']['median'] * 1e3)
    if modes:
        result['modes'] = measure_modes(distiller, batch, image_size, device, modes, iters, warmup,
                                        dict(backend=compile_backend))
    return result


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out_dir, exist_ok=True)
    results = []
    for config in args.configs:
        name = osp.splitext(osp.basename(config))[0]
        if args.render_only:
            with open(osp.join(args.out_dir, f'{name}.json')) as f:
                results.append((name, json.load(f)))
            continue
        distiller = build_distiller_from_config(config, args.size, args.keep_checkpoint,
                                                args.cfg_options)
        sweep = args.sweep_only is None or re.search(args.sweep_only, name)
        r = run_benchmark(
            distiller,
            args.batch, (args.size, args.size),
            args.device,
            args.iters,
            args.warmup,
            args.sweep_batch if sweep else (),
            args.sweep_size if sweep else (),
            modes=args.modes,
            compile_backend=args.compile_backend)
        r['config'] = config
        cached = (args.cached or args.cached_topk) and (args.cached_only is None
                                                        or re.search(args.cached_only, name))
        if cached and distiller.teacher_taps.paths != ['head']:
            print(f'{name}: no cached mode (its methods read the teacher at '
                  f'{distiller.teacher_taps.paths}; a cache holds its logits only)')
        elif cached:
            r['cached'] = [
                measure_cached(distiller, args.batch, (args.size, args.size), args.device,
                               args.iters, args.warmup, k) for k in [None] + args.cached_topk
            ]
        if torch.device(args.device).type == 'cpu':
            peaks = fresh_process_cpu_peaks(config, args.size, args.batch, args.keep_checkpoint,
                                            args.cfg_options)
            for kind, mb in peaks.items():
                r['main']['memory'][kind]['peak_mb'] = mb
        with open(osp.join(args.out_dir, f'{name}.json'), 'w') as f:
            json.dump(r, f, indent=2)
        if r['sweep_batch'] or r['sweep_size']:
            plot_sweeps(r, osp.join(args.out_dir, f'{name}_sweep.png'), name)
        print_table(name, r)
        results.append((name, r))
        del distiller
    if args.markdown:
        words = [w for w in (sys.argv[1:] if argv is None else argv) if w != '--render-only']
        with open(args.markdown, 'w') as f:
            f.write(markdown(results, 'python tools/analysis/benchmark.py ' + ' '.join(words)))
        print(f'\nwrote {args.markdown}')


if __name__ == '__main__':
    main()
