"""Evaluate a checkpoint: a distillation checkpoint with its distillation config (evaluates the
student), or an exported student checkpoint with the student's own config.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...]
    bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [...]
"""
import argparse
import json
import os

import mmkd_ext  # noqa: F401
from mmkd_ext.apis import DictAction, build_runner


def parse_args():
    parser = argparse.ArgumentParser(description='Test with mmkd_ext')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument('--out', help='write the metrics to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main():
    args = parse_args()
    runner = build_runner(args.config, work_dir=args.work_dir, launcher=args.launcher,
                          cfg_options=args.cfg_options, load_from=args.checkpoint)
    metrics = runner.test()
    if args.out:
        with open(args.out, 'w') as f:
            json.dump({k: float(v) for k, v in metrics.items()}, f, indent=2)


if __name__ == '__main__':
    main()
