"""Evaluate a checkpoint: a distillation checkpoint with its distillation config (evaluates the
student), or an exported student checkpoint with the student's own config. With ``--teacher``,
evaluate the teacher of a distillation config instead (its ``teacher_checkpoint``; no CHECKPOINT).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE] [--cfg-options k=v ...]
    python tools/test.py CONFIG --teacher [--out FILE] [--cfg-options k=v ...]
    bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [...]
    bash tools/dist_test.sh CONFIG "" GPUS --teacher

``--teacher`` runs the teacher on the config's test loader (its validation loader when it has no
test loader) on the input the distiller gives it in training, prints the top-1 and, when the config
has a ``TeacherCheckHook``, its expected value and the verdict; it exits with status 1 when the
teacher fails that check.
"""
import argparse
import json
import os
import sys

from mmengine.dist import is_main_process

import mmkd_ext  # noqa: F401
from mmkd_ext.apis import DictAction, build_runner, close_distributed, is_distiller, load_config
from mmkd_ext.engine.hooks import TeacherCheckError, evaluate_teacher, teacher_verdict
from mmkd_ext.registry import HOOKS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test with mmkd_ext')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        'checkpoint', nargs='?', default=None, help='checkpoint file (not with --teacher)')
    parser.add_argument(
        '--teacher',
        action='store_true',
        help="evaluate the distillation config's teacher (its teacher_checkpoint)")
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument('--out', help='write the metrics to this JSON file')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, help='override config entries')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if args.checkpoint == '':  # dist_test.sh CONFIG "" GPUS --teacher
        args.checkpoint = None
    if args.teacher and args.checkpoint is not None:
        parser.error('--teacher evaluates the teacher from the config\'s model.teacher_checkpoint; '
                     'give no CHECKPOINT (another teacher file: --cfg-options '
                     'model.teacher_checkpoint=FILE).')
    if not args.teacher and args.checkpoint is None:
        parser.error('CHECKPOINT is required (or --teacher to evaluate the teacher).')
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def teacher_check_cfg(cfg):
    """The config's TeacherCheckHook dict, or None."""
    for hook in cfg.get('custom_hooks', None) or []:
        if str(hook.get('type', '')).split('.')[-1] == 'TeacherCheckHook':
            return hook
    return None


def test_teacher(args) -> int:
    """Evaluate the teacher; print (and optionally write) its metrics. Returns the exit status."""
    cfg = load_config(args.config, args.cfg_options)
    if not is_distiller(cfg.model):
        raise SystemExit(f'--teacher needs a distillation config (model type mmkd_ext.Distiller); '
                         f'{args.config} builds {cfg.model.get("type")}.')
    hook_cfg = teacher_check_cfg(cfg)
    runner = build_runner(cfg, work_dir=args.work_dir, launcher=args.launcher)
    loop = runner.test_loop if runner.test_loop is not None else runner.val_loop
    if loop is None:
        raise SystemExit(f'{args.config} has neither a test nor a validation dataloader/evaluator.')
    metrics = evaluate_teacher(runner.model, loop.dataloader, loop.evaluator)
    hook = HOOKS.build(hook_cfg) if hook_cfg is not None else None
    status, verdict = 0, None
    if hook is not None:
        try:
            hook.check(metrics)
        except TeacherCheckError as err:
            status = 1
            runner.logger.error(str(err))
        verdict = teacher_verdict(hook.result, hook.expected_top1, hook.tolerance, hook.metric)
    elif 'accuracy/top1' in metrics:
        verdict = teacher_verdict(float(metrics['accuracy/top1']), None, 0.0)
    metrics = {k: float(v) for k, v in metrics.items()}
    runner.logger.info(f'Teacher metrics: {metrics}')
    if not is_main_process():  # every rank has the gathered metrics; one prints and writes them
        return status
    print(verdict or f'teacher metrics: {metrics}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(
                dict(
                    metrics,
                    **({} if hook is None else dict(
                        expected=hook.expected_top1, tolerance=hook.tolerance, passed=status
                        == 0))),
                f,
                indent=2)
    return status


def main(argv=None):
    try:
        return run(parse_args(argv))
    finally:
        close_distributed()


def run(args):
    if args.teacher:
        return test_teacher(args)
    runner = build_runner(
        args.config,
        work_dir=args.work_dir,
        launcher=args.launcher,
        cfg_options=args.cfg_options,
        load_from=args.checkpoint)
    metrics = runner.test()
    if args.out:
        with open(args.out, 'w') as f:
            json.dump({k: float(v) for k, v in metrics.items()}, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
