"""Fine-tune the student of a distillation run with a downstream config, in one command.

    python tools/finetune_student.py WORK_DIR DOWNSTREAM_CONFIG [--gpus N] [--checkpoint CKPT]
        [--student-out PATH] [--checkpoint-key KEY] [--cfg-options k=v ...] [train.py options]

It takes the best (``best_*.pth``), else the last checkpoint of the distillation ``WORK_DIR``,
exports the student (as tools/export_student.py), then runs tools/train.py (``--gpus 1``, in this
process) or tools/dist_train.sh (``--gpus N``) on DOWNSTREAM_CONFIG with
``--cfg-options model.backbone.init_cfg.checkpoint=<the student>``. Other options (``--work-dir``,
``--amp``, ``--resume`` ...) go to tools/train.py, e.g.

    python tools/finetune_student.py work_dirs/swin-l_scalekd_r50 \
        configs/downstream/mask-rcnn_resnet50-distilled_fpn_8xb2-12e_coco.py --gpus 8
"""
import argparse
import os.path as osp
import pickle
import runpy
import subprocess
import sys

from mmkd_ext.apis.export import export_student
from mmkd_ext.apis.finetune import (DEFAULT_CHECKPOINT_KEY, check_checkpoint_key, find_checkpoint,
                                    student_path, train_command)


def parse_args():
    parser = argparse.ArgumentParser(
        description='Export the student of a distillation run and fine-tune it downstream')
    parser.add_argument('work_dir', help='work_dir of the distillation run (tools/train.py)')
    parser.add_argument('config', help='downstream config (e.g. configs/downstream/...)')
    parser.add_argument('--gpus', type=int, default=1, help='processes (>1: dist_train.sh)')
    parser.add_argument('--checkpoint', help='distillation checkpoint (default: best, else last)')
    parser.add_argument(
        '--student-out', help='exported student file (default: WORK_DIR/student_<ckpt>.pth)')
    parser.add_argument(
        '--checkpoint-key',
        default=DEFAULT_CHECKPOINT_KEY,
        help=f'config entry that takes the student (default: {DEFAULT_CHECKPOINT_KEY})')
    parser.add_argument(
        '--cfg-options', nargs='+', default=[], help='further config overrides, key=value')
    return parser.parse_known_args()


def main():
    args, train_args = parse_args()
    prog = 'finetune_student.py'
    try:
        check_checkpoint_key(args.config, args.checkpoint_key)
        src = args.checkpoint or find_checkpoint(args.work_dir)
        dst = student_path(src, args.student_out)
        out = export_student(src, dst)
    except (OSError, KeyError, RuntimeError, ValueError, pickle.UnpicklingError) as err:
        # These messages say what is wrong and what to do; a traceback adds nothing.
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        sys.exit(f'{prog}: error: {message}')
    print(
        f'{prog}: exported {len(out["state_dict"])} student tensors of {src} to {dst}', flush=True)
    cmd = train_command(
        args.config,
        osp.abspath(dst),
        gpus=args.gpus,
        checkpoint_key=args.checkpoint_key,
        cfg_options=args.cfg_options,
        train_args=train_args,
        tools_dir=osp.dirname(osp.abspath(__file__)))
    print(f'{prog}: running {" ".join(cmd)}', flush=True)
    if args.gpus == 1:
        # tools/train.py in this process (its imports are done): the same as running `cmd`.
        sys.argv = cmd[1:]
        runpy.run_path(cmd[1], run_name='__main__')
    else:
        sys.exit(subprocess.call(cmd))


if __name__ == '__main__':
    main()
