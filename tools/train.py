"""Train a model (a distiller or a plain OpenMMLab model) from a config with MMEngine's Runner.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
    bash tools/dist_train.sh CONFIG GPUS [...]
"""
import argparse
import os

import mmkd_ext  # noqa: F401  (registries + checkpoint loading policy)
from mmkd_ext.apis import DictAction, build_runner, close_distributed


def parse_args():
    parser = argparse.ArgumentParser(description='Train with mmkd_ext')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and checkpoints')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint, or from the latest one in the work dir '
        'when no path is given')
    parser.add_argument('--amp', action='store_true', help='mixed precision training')
    parser.add_argument('--no-validate', action='store_true', help='skip validation')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the lr by total batch size / auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. model.teacher_checkpoint=PATH')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    # torchrun passes --local-rank, torch.distributed.launch --local_rank: accept both.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def train(args):
    runner = build_runner(
        args.config,
        work_dir=args.work_dir,
        launcher=args.launcher,
        cfg_options=args.cfg_options,
        resume=args.resume,
        amp=args.amp,
        no_validate=args.no_validate,
        auto_scale_lr=args.auto_scale_lr)
    runner.train()


def main():
    args = parse_args()
    try:
        train(args)  # the runner (and its DDP model) is gone when it returns
    finally:
        close_distributed()


if __name__ == '__main__':
    main()
