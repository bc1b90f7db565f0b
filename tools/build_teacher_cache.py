"""Run the teacher of a distillation config over exactly the batches training will see and store
its logits, so that runs distilling from it need not run (or build) the teacher.

    python tools/build_teacher_cache.py CONFIG --epochs E [--topk K] [--out DIR] [--world-size W]
    bash tools/dist_build_teacher_cache.sh CONFIG GPUS --epochs E [--topk K] [--out DIR]

The config needs ``augment_stream = dict(seed=...)``. Interrupted builds resume (run the same
command again). Then train with ``--cfg-options model.teacher_cache.path=DIR``. See
docs/teacher_cache.md.
"""
import argparse
import os
import os.path as osp

import torch

import mmkd_ext  # noqa: F401  (registries + checkpoint loading policy)
from mmkd_ext.apis import DictAction, close_distributed
from mmkd_ext.apis.teacher_cache import build_teacher_cache


def parse_args():
    p = argparse.ArgumentParser(description='Build a teacher cache for a distillation config')
    p.add_argument('config')
    p.add_argument('--epochs', type=int, required=True, help='build epochs 0 .. E-1')
    p.add_argument('--topk', type=int, help='store the K most likely classes (default: all)')
    p.add_argument(
        '--dtype',
        choices=['float32', 'float16'],
        default='float32',
        help='precision of full logits')
    p.add_argument('--out', help='cache directory (default: work_dirs/<config>_teacher_cache)')
    p.add_argument(
        '--world-size',
        type=int,
        help='number of training processes the cache is for (one-process build)')
    p.add_argument('--device', help='where the teacher runs (default: cuda if available)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    p.add_argument('--launcher', choices=['none', 'pytorch'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = p.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main():
    args = parse_args()
    out = args.out or osp.join('work_dirs',
                               osp.splitext(osp.basename(args.config))[0] + '_teacher_cache')
    device = args.device
    if args.launcher == 'pytorch':
        import torch.distributed as dist
        backend = 'nccl' if torch.cuda.is_available() else 'gloo'
        dist.init_process_group(backend=backend)
        if torch.cuda.is_available():
            local = int(os.environ['LOCAL_RANK'])
            torch.cuda.set_device(local)
            device = device or f'cuda:{local}'
    try:
        manifest = build_teacher_cache(args.config, args.epochs, out, args.topk, args.dtype,
                                       args.world_size, device, args.cfg_options)
    finally:
        close_distributed()
    print(f'teacher cache {out}: epochs {manifest["epochs"]}, {manifest["storage"]}, '
          f'{manifest["world_size"]} rank(s)')


if __name__ == '__main__':
    main()
