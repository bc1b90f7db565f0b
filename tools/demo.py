"""The digits demo: teacher, student alone, and student + each distillation method, over 3 seeds.

    python tools/demo.py [--seeds 0 1 2] [--only REGEX] [--work-dir work_dirs/demo]

Every distillation config under configs/demo/ is a row (a method issue adds its row by adding a
config there). Each distinct teacher is trained once (seed 0) through the same Runner and configs a
user would use; its checkpoint is then given to the distillers. Prints a table of test top-1 accuracy
(mean and standard deviation over the seeds) and writes it as JSON to WORK_DIR/results.json.
"""
import argparse
import glob
import json
import os.path as osp
import re
import statistics
import time

from mmengine.config import Config
from mmengine.runner import Runner

import mmkd_ext  # noqa: F401
from mmkd_ext.apis import is_distiller

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def train_and_test(config, work_dir, seed, overrides=None):
    cfg = Config.fromfile(config)
    if overrides:
        cfg.merge_from_dict(overrides)
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=seed)
    cfg.log_level = 'WARNING'
    cfg.experiment_name = f'{osp.basename(work_dir)}_{time.time_ns()}'
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    ckpt = osp.join(work_dir, f'epoch_{cfg.train_cfg.max_epochs}.pth')
    return round(float(metrics['accuracy/top1']), 2), ckpt


def describe(cfg):
    return ' + '.join(m['type'].replace('Loss', '') for m in cfg.model.methods)


def summary(values):
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--only', help='regex: run only the distillation configs it matches')
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'demo'))
    parser.add_argument('--config-dir', default=osp.join(ROOT, 'configs', 'demo'))
    args = parser.parse_args()

    rows = []
    for path in sorted(glob.glob(osp.join(args.config_dir, '*.py'))):
        cfg = Config.fromfile(path)
        if not is_distiller(cfg.model):
            continue
        if args.only and not re.search(args.only, osp.basename(path)):
            continue
        rows.append((path, cfg))
    if not rows:
        raise SystemExit(f'No distillation config in {args.config_dir} matches.')

    start = time.time()
    teachers, results = {}, []
    for path, cfg in rows:
        t_cfg = cfg.model.teacher
        if t_cfg not in teachers:
            name = osp.splitext(osp.basename(t_cfg))[0]
            acc, ckpt = train_and_test(t_cfg, osp.join(args.work_dir, 'teacher', name), seed=0)
            teachers[t_cfg] = (acc, ckpt)
            results.append(dict(row=f'teacher {name}', config=t_cfg, top1=[acc]))
            print(f'[{time.time() - start:6.0f}s] teacher {name}: top-1 {acc:.2f}', flush=True)
    students = {}
    for path, cfg in rows:
        s_cfg = cfg.model.student
        if s_cfg in students:
            continue
        name = osp.splitext(osp.basename(s_cfg))[0]
        accs = [train_and_test(s_cfg, osp.join(args.work_dir, 'student', name, f'seed{s}'), s)[0]
                for s in args.seeds]
        students[s_cfg] = accs
        results.append(dict(row=f'student {name} alone', config=s_cfg, top1=accs))
        print(f'[{time.time() - start:6.0f}s] student {name} alone: {accs}', flush=True)
    for path, cfg in rows:
        name = osp.splitext(osp.basename(path))[0]
        ckpt = teachers[cfg.model.teacher][1]
        accs = [train_and_test(path, osp.join(args.work_dir, name, f'seed{s}'), s,
                               {'model.teacher_checkpoint': ckpt})[0] for s in args.seeds]
        results.append(dict(row=f'student + {describe(cfg)}', config=path, top1=accs))
        print(f'[{time.time() - start:6.0f}s] {name}: {accs}', flush=True)

    print(f'\nDigits test top-1 (%), {len(args.seeds)} seeds {args.seeds}, '
          f'{time.time() - start:.0f} s in all\n')
    print('| model | top-1 mean | std | config |')
    print('|---|---|---|---|')
    for r in results:
        mean, std = summary(r['top1'])
        r['mean'], r['std'] = mean, std
        print(f"| {r['row']} | {mean:.2f} | {std:.2f} | {osp.relpath(r['config'], ROOT)} |")
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2)


if __name__ == '__main__':
    main()
