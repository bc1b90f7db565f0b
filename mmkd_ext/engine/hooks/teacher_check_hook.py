"""Check the teacher before training: evaluate it once on the validation set and stop when it is
clearly worse than its published accuracy.

A wrong teacher does not fail loudly: a wrong checkpoint (partly matched keys, another model's
weights), a wrong normalisation of its input, or a backbone that computes another network than its
checkpoint was trained as (mmpretrain 1.2.0's DeiT3) all still give gradients, and the run only
loses its result, 300 epochs later. :class:`TeacherCheckHook` evaluates ``distiller.teacher`` on the
runner's validation loader with the validation evaluator before the first training iteration, on
exactly the input the distiller gives the teacher in training, logs its top-1 beside the expected
value, and raises :class:`TeacherCheckError` when it is more than ``tolerance`` points below.

:func:`evaluate_teacher` is the evaluation itself (also used by ``tools/test.py CONFIG --teacher``).
"""
from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from mmkd_ext.registry import HOOKS


class TeacherCheckError(RuntimeError):
    """The teacher's accuracy is more than the tolerance below the expected value."""


def unwrap_distiller(model):
    """The distiller inside ``model`` (``.module`` of a DDP/FSDP wrapper), or a clear error when the
    model has no ``teacher`` (not a distillation config)."""
    model = model.module if is_model_wrapper(model) else model
    if getattr(model, 'teacher', None) is None:
        raise TypeError(
            f'The teacher check needs a distillation model (mmkd_ext.Distiller) with a `teacher`; '
            f'this config builds {type(model).__name__}. Remove TeacherCheckHook from '
            f'`custom_hooks`, or use a distillation config.')
    return model


@torch.no_grad()
def teacher_predict(distiller, data_batch: dict):
    """The teacher's predictions for one batch from a dataloader, on the distiller's input path.

    The batch goes through the distiller's (= the student's) data preprocessor in its evaluation
    mode (no batch augments) and :meth:`Distiller.teacher_inputs` (the conversion to the teacher's
    own normalisation, when it differs), as :meth:`Distiller.teacher_features` feeds the teacher in
    training.

    Args:
        distiller (Distiller): the unwrapped distiller.
        data_batch (dict): a batch as the dataloader yields it (``inputs``, ``data_samples``).

    Returns:
        list: the teacher's ``predict`` outputs (data samples with ``pred_score`` /
        ``pred_label`` for an mmpretrain classifier).
    """
    data = distiller.data_preprocessor(data_batch, False)
    return distiller.teacher(
        distiller.teacher_inputs(data['inputs']), data['data_samples'], mode='predict')


def evaluate_teacher(model, dataloader, evaluator) -> dict:
    """Evaluate the distiller's teacher on ``dataloader`` with ``evaluator``.

    In a distributed run every rank evaluates its part of the loader and the evaluator gathers the
    results across ranks (MMEngine's metrics collect and broadcast), so every rank returns the same
    metrics.

    Args:
        model (nn.Module): the distiller, possibly wrapped (DDP).
        dataloader (DataLoader): e.g. ``runner.val_loop.dataloader``.
        evaluator (Evaluator): e.g. ``runner.val_loop.evaluator`` (its dataset_meta already set).

    Returns:
        dict: the evaluator's metrics, e.g. ``{'accuracy/top1': 80.7, ...}``.
    """
    distiller = unwrap_distiller(model)
    for data_batch in dataloader:
        evaluator.process(
            data_samples=teacher_predict(distiller, data_batch), data_batch=data_batch)
    return evaluator.evaluate(len(dataloader.dataset))


def teacher_verdict(measured: float,
                    expected: Optional[float],
                    tolerance: float,
                    metric: str = 'accuracy/top1') -> str:
    """One line comparing ``measured`` with ``expected``; 'PASS' / 'FAIL' / no verdict."""
    if expected is None:
        return f'teacher {metric}: {measured:.2f} (no expected value given)'
    status = 'PASS' if measured >= expected - tolerance else 'FAIL'
    return (f'teacher {metric}: {measured:.2f}, expected {expected:.2f} '
            f'(tolerance {tolerance:.2f}): {status}')


@HOOKS.register_module()
class TeacherCheckHook(Hook):
    """Evaluate the teacher once before the first training epoch and stop if it is too weak.

    Add it to a distillation config::

        custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook', expected_top1=83.06)]

    Before the first training iteration it runs ``distiller.teacher`` in ``predict`` mode over the
    runner's validation dataloader (the student's test pipeline and data preprocessor, i.e. the
    input the teacher gets in training, without batch augments), evaluates the outputs with the
    validation evaluator, logs the result beside ``expected_top1`` and raises
    :class:`TeacherCheckError` when ``measured < expected_top1 - tolerance``. A run resumed after
    its first iteration skips the check (it ran when the run started), unless ``check_on_resume``.

    Args:
        expected_top1 (float, optional): the teacher's expected value of ``metric`` in percent,
            e.g. its published top-1. None only logs the measured value. Defaults to None.
        tolerance (float): how many points below ``expected_top1`` are still accepted (the
            student's test pipeline may crop differently from the teacher's own: a few tenths).
            Defaults to 1.0.
        metric (str): the evaluator's key to compare. Defaults to 'accuracy/top1'.
        check_on_resume (bool): also check when resuming a run past its first iteration.
            Defaults to False.
    """

    priority = 'VERY_HIGH'

    def __init__(self,
                 expected_top1: Optional[float] = None,
                 tolerance: float = 1.0,
                 metric: str = 'accuracy/top1',
                 check_on_resume: bool = False):
        if expected_top1 is not None and not 0 <= expected_top1 <= 100:
            raise ValueError(f'expected_top1 is a percentage in [0, 100], got {expected_top1}.')
        if tolerance < 0:
            raise ValueError(f'tolerance is a number of points >= 0, got {tolerance}.')
        self.expected_top1 = expected_top1
        self.tolerance = tolerance
        self.metric = metric
        self.check_on_resume = check_on_resume
        self.result = None  # the measured value, once checked

    def before_train(self, runner) -> None:
        if runner.iter > 0 and not self.check_on_resume:
            runner.logger.info(f'TeacherCheckHook: resumed at iteration {runner.iter}; the teacher '
                               f'was checked when the run started (check_on_resume=False).')
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if getattr(model, 'teacher_cache', None) is not None and model.teacher is None:
            runner.logger.info(
                'TeacherCheckHook: the teacher\'s logits come from a teacher cache and the '
                'teacher is not built; check it where the cache was built (`python tools/test.py '
                'CONFIG --teacher`).')
            return
        val_loop = runner.val_loop
        if val_loop is None:
            print_log(
                'TeacherCheckHook: the run has no validation loop (val_cfg / val_dataloader '
                'off, e.g. --no-validate): the teacher is NOT checked.',
                logger='current',
                level=30)
            return
        runner.logger.info(f'TeacherCheckHook: evaluating the teacher on the validation set '
                           f'({len(val_loop.dataloader.dataset)} images) before training.')
        metrics = evaluate_teacher(runner.model, val_loop.dataloader, val_loop.evaluator)
        self.check(metrics)
        runner.logger.info(
            'TeacherCheckHook: ' +
            teacher_verdict(self.result, self.expected_top1, self.tolerance, self.metric))

    def check(self, metrics: dict) -> float:
        """Compare ``metrics[self.metric]`` with the expected value; raise when too low.

        Returns:
            float: the measured value.
        """
        if self.metric not in metrics:
            raise KeyError(f'TeacherCheckHook: the validation evaluator gives no {self.metric!r} '
                           f'(it gives {sorted(metrics)}); set `metric` to one of them.')
        self.result = measured = float(metrics[self.metric])
        if self.expected_top1 is not None and measured < self.expected_top1 - self.tolerance:
            raise TeacherCheckError(
                f'The teacher scores {self.metric} {measured:.2f} on the validation set, expected '
                f'{self.expected_top1:.2f} (tolerance {self.tolerance:.2f}): it is not the model '
                f'its config promises. Likely causes: a wrong or partly loaded teacher_checkpoint '
                f'(see the load report in the log), an input normalisation (mean/std, RGB/BGR) '
                f'other than the one the teacher was trained with, or a backbone that computes '
                f'another network than its checkpoint (e.g. mmpretrain 1.2.0\'s DeiT3: use '
                f'mmkd_ext.DeiT3). Evaluate it alone with `python tools/test.py CONFIG --teacher`.')
        return measured
