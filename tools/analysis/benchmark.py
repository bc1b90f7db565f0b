"""Benchmark distillation configs: step time against its floor, memory, parameters, scaling.

    python tools/analysis/benchmark.py CONFIG [CONFIG ...] [--batch 8] [--size 224] [--iters 10]
        [--sweep-batch 2 4 8] [--sweep-size 112 160 224] [--device cpu|cuda] [--out-dir DIR]
        [--markdown docs/benchmark.md]

The teacher keeps its initial weights unless --keep-checkpoint is given (speed does not depend on
the weights, and tests and fresh machines have none). For each config it prints a table, writes
DIR/<config>.json and DIR/<config>_sweep.png; with --markdown it writes one table for all configs.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import sys

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import init_default_scope
from mmengine.utils import import_modules_from_strings

import mmkd_ext  # noqa: F401
from mmkd_ext.analysis.benchmark import plot_sweeps, run_benchmark


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Distillation overhead benchmark')
    p.add_argument('configs', nargs='+')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--size', type=int, default=224, help='image size (square)')
    p.add_argument('--iters', type=int, default=10, help='timed iterations per step kind')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--sweep-batch', type=int, nargs='*', default=[2, 4, 8])
    p.add_argument('--sweep-size', type=int, nargs='*', default=[112, 160, 224])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, help='torch CPU threads (default: torch default)')
    p.add_argument('--out-dir', default='work_dirs/benchmark')
    p.add_argument('--markdown', help='also write a markdown table for all configs here')
    p.add_argument('--keep-checkpoint', action='store_true',
                   help='load the teacher checkpoint of the config')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def build_distiller(config, size, keep_checkpoint=False, cfg_options=None):
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model = cfg.model
    if str(model.get('type', '')).split('.')[-1] != 'Distiller':
        raise ValueError(f'{config} is not a distillation config (model.type is {model.type}).')
    if not keep_checkpoint:
        model.teacher_checkpoint = None
    channels = model.get('input_shape', (3, 224, 224))[0]
    model.input_shape = (channels, size, size)
    return MMENGINE_MODELS.build(model)


def method_label(distiller):
    return ' + '.join(type(m).__name__.replace('Loss', '') for m in distiller.methods)


def print_table(name, r):
    m = r['main']
    t = {k: v['median'] for k, v in m['times_ms'].items()}
    print(f"\n== {name} ({r['machine']['device']}, batch {m['batch']}, {m['image_size'][0]} px) ==")
    print(f"student step {t['student']:.1f} ms | teacher fwd (to last tap) {t['teacher']:.1f} ms "
          f"(full {t['teacher_full']:.1f}) | floor {m['floor_ms']:.1f} ms | distill step "
          f"{t['distill']:.1f} ms | ratio {m['overhead_ratio']:.3f}")
    for row in r['methods']:
        print(f"  method {row['name']} ({row['type']}): {row['ms']:.2f} ms fwd+bwd alone, "
              f"{row['trainable_params']} trainable params")
    mem = m.get('memory')
    if mem:
        print(f"  saved for backward: student {mem['student']['saved_for_backward_mb']:.1f} MB, "
              f"teacher {mem['teacher']['saved_for_backward_mb']:.1f} MB, distill "
              f"{mem['distill']['saved_for_backward_mb']:.1f} MB; teacher weights "
              f"{mem['teacher_weights_mb']:.1f} MB, taps {mem['teacher_taps_mb']:.1f} MB, method "
              f"params {mem['method_params_mb']:.2f} MB")
        print(f"  peak memory above start: student {mem['student']['peak_mb']:.1f} MB, teacher "
              f"{mem['teacher']['peak_mb']:.1f} MB, distill {mem['distill']['peak_mb']:.1f} MB")
    for key in ('sweep_batch', 'sweep_size'):
        for row in r[key]:
            print(f"  {key}: batch {row['batch']} size {row['image_size']}: student "
                  f"{row['student_ms']:.1f} / floor {row['floor_ms']:.1f} / distill "
                  f"{row['distill_ms']:.1f} ms, ratio {row['overhead_ratio']:.3f}")


def markdown(results, args):
    lines = []
    first = results[0][2]['machine']
    lines.append(f"Machine: {first.get('cpu', first['machine'])}, {first['cpu_count']} cores, "
                 f"torch {first['torch']} ({first['torch_threads']} threads), device "
                 f"{first['device']}{', ' + first['gpu'] if 'gpu' in first else ''}. Batch "
                 f"{args.batch}, {args.size} px, median of {args.iters} interleaved steps after "
                 f"{args.warmup} warm-up (IQR in brackets).\n")
    lines.append('| config | method | student step ms | teacher fwd ms | floor ms | distill step '
                 'ms | ratio | method share ms | extra params | saved-for-backward MB '
                 '(student / distill) | teacher weights + taps MB |')
    lines.append('|---|---|---|---|---|---|---|---|---|---|---|')
    for name, label, r in results:
        m = r['main']
        tm = m['times_ms']
        mem = m['memory']
        iqr = lambda k: f"{tm[k]['median']:.1f} [{tm[k]['q1']:.1f}-{tm[k]['q3']:.1f}]"  # noqa
        share = sum(row['ms'] for row in r['methods'])
        lines.append(
            f"| {name} | {label} | {iqr('student')} | {iqr('teacher')} | {m['floor_ms']:.1f} | "
            f"{iqr('distill')} | {m['overhead_ratio']:.3f} | {share:.2f} | "
            f"{r['params']['extra_trainable']:,} | {mem['student']['saved_for_backward_mb']:.0f} / "
            f"{mem['distill']['saved_for_backward_mb']:.0f} | "
            f"{mem['teacher_weights_mb']:.0f} + {mem['teacher_taps_mb']:.1f} |")
    return '\n'.join(lines) + '\n'


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out_dir, exist_ok=True)
    results = []
    for config in args.configs:
        name = osp.splitext(osp.basename(config))[0]
        distiller = build_distiller(config, args.size, args.keep_checkpoint, args.cfg_options)
        r = run_benchmark(distiller, args.batch, (args.size, args.size), args.device, args.iters,
                          args.warmup, args.sweep_batch, args.sweep_size)
        r['config'] = config
        with open(osp.join(args.out_dir, f'{name}.json'), 'w') as f:
            json.dump(r, f, indent=2)
        plot_sweeps(r, osp.join(args.out_dir, f'{name}_sweep.png'), name)
        print_table(name, r)
        results.append((name, method_label(distiller), r))
        del distiller
    if args.markdown:
        with open(args.markdown, 'w') as f:
            f.write(markdown(results, args))
        print(f'\nwrote {args.markdown}')


if __name__ == '__main__':
    main()
