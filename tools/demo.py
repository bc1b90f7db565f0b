"""The digits demo: teacher, student alone, and student + each distillation method, over 5 seeds.

    python tools/demo.py [--seeds 0 1 2 3 4] [--rows REGEX] [--jobs N] [--resume]
                         [--work-dir work_dirs/demo]

Every distillation config under configs/demo/ is a row (a method issue adds its row by adding a
config there); ``--rows`` keeps the configs whose file name matches a regular expression. Each
distinct teacher is trained once (seed 0) through the same Runner and configs a user would use, and
its checkpoint is given to the distillers; each student alone and each row is trained once per seed.
Runs go to ``--jobs`` worker processes (default: one per CPU core, at most 8), each with its share
of the cores. With ``--resume`` a run already finished in WORK_DIR with the same config, seed and
teacher checkpoint is read back instead of trained again (an interrupted demo goes on where it
stopped; running it in parts by ``--rows`` / ``--seeds`` and then whole gives the whole table).
Prints a table of test top-1 accuracy (mean and sample standard deviation over the
seeds, the difference to the student alone, each seed's value) and writes it as JSON to
WORK_DIR/results.json.
"""
import argparse
import glob
import hashlib
import json
import multiprocessing
import os
import os.path as osp
import re
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from mmengine.config import Config

import mmkd_ext  # noqa: F401
from mmkd_ext.apis import is_distiller

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def set_threads(num_threads):
    import torch
    torch.set_num_threads(num_threads)


def run_key(cfg, seed):
    """What a finished run depends on: the whole config, the seed and the teacher's weights."""
    digest = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
    digest.update(str(seed).encode())
    ckpt = cfg.model.get('teacher_checkpoint')
    if isinstance(ckpt, str) and osp.isfile(ckpt):
        with open(ckpt, 'rb') as f:
            digest.update(f.read())
    return digest.hexdigest()


def train_and_test(config, work_dir, seed, overrides=None, resume=False):
    """Train ``config`` with the Runner, test it; return (top-1 %, last checkpoint path).

    With ``resume``, a result saved in ``work_dir`` by a run of the same config, seed and teacher
    weights (and its checkpoint) is returned without training.
    """
    from mmengine.runner import Runner
    cfg = Config.fromfile(config)
    if overrides:
        cfg.merge_from_dict(overrides)
    key = run_key(cfg, seed)
    saved_path = osp.join(work_dir, 'result.json')
    if resume and osp.isfile(saved_path):
        with open(saved_path) as f:
            saved = json.load(f)
        if saved.get('key') == key and osp.isfile(saved['checkpoint']):
            return saved['top1'], saved['checkpoint']
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=seed)
    cfg.log_level = 'WARNING'
    cfg.experiment_name = f'{osp.basename(work_dir)}_{time.time_ns()}'
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    ckpt = osp.join(work_dir, f'epoch_{cfg.train_cfg.max_epochs}.pth')
    top1 = round(float(metrics['accuracy/top1']), 2)
    with open(saved_path, 'w') as f:
        json.dump(dict(key=key, top1=top1, checkpoint=ckpt, seed=seed, config=config), f)
    return top1, ckpt


def describe(cfg):
    return ' + '.join(m['type'].replace('Loss', '') for m in cfg.model.methods)


def summary(values):
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def name_of(path):
    return osp.splitext(osp.basename(path))[0]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    parser.add_argument(
        '--rows',
        help='regex: run only the distillation configs whose file name '
        'it matches (with their teachers and students alone)')
    parser.add_argument(
        '--jobs',
        type=int,
        default=min(os.cpu_count() or 1, 8),
        help='runs at a time, in worker processes (default: CPU cores, at most 8)')
    parser.add_argument(
        '--resume',
        action='store_true',
        help='read back the runs already finished in WORK_DIR (same config, seed '
        'and teacher weights) instead of training them again')
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'demo'))
    parser.add_argument('--config-dir', default=osp.join(ROOT, 'configs', 'demo'))
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f'--jobs must be at least 1, got {args.jobs}')
    return args


def main(argv=None):
    args = parse_args(argv)
    rows = []
    for path in sorted(glob.glob(osp.join(args.config_dir, '*.py'))):
        cfg = Config.fromfile(path)
        if not is_distiller(cfg.model):
            continue
        if args.rows and not re.search(args.rows, osp.basename(path)):
            continue
        rows.append((path, cfg))
    if not rows:
        raise SystemExit(f'No distillation config in {args.config_dir} matches.')
    teachers = list(dict.fromkeys(cfg.model.teacher for _, cfg in rows))
    students = list(dict.fromkeys(cfg.model.student for _, cfg in rows))

    start = time.time()
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    top1 = {}  # (config, seed) -> accuracy
    ckpts = {}  # teacher config -> checkpoint

    def log(msg):
        print(f'[{time.time() - start:6.0f}s] {msg}', flush=True)

    with ProcessPoolExecutor(
            args.jobs,
            mp_context=multiprocessing.get_context('spawn'),
            initializer=set_threads,
            initargs=(threads, )) as pool:
        pending = {}

        def submit(config, work_dir, seed, overrides=None):
            future = pool.submit(train_and_test, config, work_dir, seed, overrides, args.resume)
            pending[future] = (config, seed)

        # Teachers first (the rows wait for them), then the students alone fill the workers.
        for t in teachers:
            submit(t, osp.join(args.work_dir, 'teacher', name_of(t)), 0)
        for s in students:
            for seed in args.seeds:
                submit(s, osp.join(args.work_dir, 'student', name_of(s), f'seed{seed}'), seed)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                config, seed = pending.pop(future)
                acc, ckpt = future.result()
                top1[config, seed] = acc
                log(f'{name_of(config)} seed {seed}: top-1 {acc:.2f}')
                if config in teachers:
                    ckpts[config] = ckpt
                    for path, cfg in rows:
                        if cfg.model.teacher == config:
                            for s in args.seeds:
                                submit(path, osp.join(args.work_dir, name_of(path), f'seed{s}'), s,
                                       {'model.teacher_checkpoint': ckpt})
    wall = time.time() - start

    results = []
    for s in students:
        pair = [(p, c) for p, c in rows if c.model.student == s]
        for t in dict.fromkeys(c.model.teacher for _, c in pair):
            results.append(
                dict(row=f'teacher {name_of(t)}', config=t, top1=[top1[t, 0]], seeds=[0]))
        alone = [top1[s, seed] for seed in args.seeds]
        results.append(
            dict(row=f'student {name_of(s)} alone', config=s, top1=alone, seeds=args.seeds))
        for path, cfg in pair:
            accs = [top1[path, seed] for seed in args.seeds]
            results.append(
                dict(
                    row=f'+ {describe(cfg)}',
                    config=path,
                    top1=accs,
                    seeds=args.seeds,
                    vs_alone=statistics.fmean(accs) - statistics.fmean(alone)))

    print(f'\nDigits test top-1 (%), seeds {args.seeds}, {args.jobs} jobs x {threads} threads, '
          f'{wall:.0f} s in all\n')
    print('| model | top-1 mean ± std | vs alone | seeds | config |')
    print('|---|---|---|---|---|')
    for r in results:
        r['mean'], r['std'] = summary(r['top1'])
        delta = f"{r['vs_alone']:+.2f}" if 'vs_alone' in r else ''
        spread = f" ± {r['std']:.2f}" if len(r['top1']) > 1 else ''
        print(f"| {r['row']} | {r['mean']:.2f}{spread} | {delta} | "
              f"{', '.join(f'{a:.2f}' for a in r['top1'])} | {osp.relpath(r['config'], ROOT)} |")
    os.makedirs(args.work_dir, exist_ok=True)
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump(
            dict(seeds=args.seeds, jobs=args.jobs, wall_s=round(wall), rows=results), f, indent=2)


if __name__ == '__main__':
    main()
