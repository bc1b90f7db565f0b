"""The base class every distillation loss derives from, and what the distiller gives it."""
from typing import Dict, List, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmkd_ext.utils.tokens import num_extra_tokens

TapSpec = Union[str, Sequence[str], None]


def _class_dim(shape):
    """Class count of a logits tap shape (batch removed): (C,) or per-pixel (C, H, W), or the
    first of a tuple output."""
    if isinstance(shape, list):
        shape = shape[0]
    return shape[0] if isinstance(shape, tuple) and shape else shape


def kl_div_with_temperature(student_logits, teacher_logits, tau: float):
    """T^2 * KL(softmax(z_t/T) || softmax(z_s/T)), summed over classes, mean over the batch.

    Args:
        student_logits, teacher_logits: (B, C).
    Returns:
        a scalar.
    """
    log_p_s = F.log_softmax(student_logits / tau, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / tau, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction='batchmean', log_target=True) * tau**2


class Progress(NamedTuple):
    """Where training stands, given to every loss call by the distiller (``progress=``).

    Args:
        epoch (int): epochs completed (0 during the first epoch). Defaults to 0.
        max_epochs (int, optional): length of an epoch-based schedule. Defaults to None.
        iter (int): iterations completed. Defaults to 0.
        max_iters (int, optional): length of the schedule in iterations. Defaults to None.
    """
    epoch: int = 0
    max_epochs: Optional[int] = None
    iter: int = 0
    max_iters: Optional[int] = None


class DistillLoss(nn.Module):
    """A distillation loss: which features it reads, and the weighted terms it returns.

    A subclass sets ``default_student_taps`` / ``default_teacher_taps`` ({name: module path, list of
    paths, or None for an optional tap that is off by default}); a config may override them with
    ``student_taps`` / ``teacher_taps``, and switch an optional tap off with ``None``. The distiller
    reads the modules' outputs with forward hooks and calls ``forward`` with the same structure:
    {name: feature, or list of features for a list of paths}; taps that are off are absent.

    Args:
        student_taps (dict, optional): {name: path or [paths] or None} on the student, over the
            defaults. Defaults to None.
        teacher_taps (dict, optional): the same on the teacher. Defaults to None.
        loss_weight (float): multiplies every term this loss returns. Defaults to 1.0.
        name (str, optional): prefix of the logged terms (``loss_{name}`` or
            ``loss_{name}_{term}``). Defaults to the class's ``default_name``.
    """
    default_student_taps: Dict[str, TapSpec] = {}
    default_teacher_taps: Dict[str, TapSpec] = {}
    default_name = 'distill'
    #: set by methods that send gradients through frozen teacher layers (teacher runs with autograd)
    teacher_needs_grad = False
    REDUCTIONS = ('sum', 'mean')

    def __init__(self,
                 student_taps: Optional[Dict[str, TapSpec]] = None,
                 teacher_taps: Optional[Dict[str, TapSpec]] = None,
                 loss_weight: float = 1.0,
                 name: Optional[str] = None):
        super().__init__()
        self.student_taps = self._check_taps(student_taps, self.default_student_taps, 'student')
        self.teacher_taps = self._check_taps(teacher_taps, self.default_teacher_taps, 'teacher')
        self.loss_weight = loss_weight
        self.name = name or self.default_name
        self.student_extra = self.teacher_extra = 0

    def _check_taps(self, given, default, role):
        taps = dict(default)
        if given is not None:
            if not isinstance(given, dict):
                raise TypeError(f'{type(self).__name__}: {role}_taps must be a dict '
                                f'{{name: module path}}, got {given!r}')
            unknown = set(given) - set(default) if default else set()
            if unknown:
                raise KeyError(
                    f'{type(self).__name__}: unknown {role} tap name(s) {sorted(unknown)}; '
                    f'this loss reads {sorted(default)}.')
            taps.update(given)
        for key, value in taps.items():
            paths = list(value) if isinstance(value, (list, tuple)) else [value]
            if value is not None and not all(isinstance(p, str) and p for p in paths):
                raise TypeError(
                    f'{type(self).__name__}: {role}_taps[{key!r}] must be a module path (a string '
                    f"such as 'backbone.layers.0'), a list of them, or None to switch it off; got "
                    f'{value!r}. `python tools/list_taps.py CONFIG` lists the paths.')
        taps = {k: v for k, v in taps.items() if v is not None}
        if not taps:
            raise ValueError(f'{type(self).__name__} needs {role}_taps (module paths to read).')
        return taps

    def drop_taps(self, *names: str) -> None:
        """Switch taps off on both sides (e.g. those of a term whose weight is 0, so the teacher can
        stop earlier)."""
        for name in names:
            self.student_taps.pop(name, None)
            self.teacher_taps.pop(name, None)

    def tap_paths(self, role: str, name: str) -> List[str]:
        """The module path(s) of tap ``name`` on ``role`` ('student' or 'teacher'), as a list."""
        value = getattr(self, f'{role}_taps')[name]
        return list(value) if isinstance(value, (list, tuple)) else [value]

    def as_list(self, feats: dict, role: str, name: str) -> list:
        """The value(s) of tap ``name`` as a list, whether it was given as a path or a list of them
        (``feats`` is what ``forward`` or ``setup`` received for ``role``)."""
        value = feats[name]
        return list(value) if isinstance(getattr(self, f'{role}_taps')[name],
                                         (list, tuple)) else [value]

    @staticmethod
    def reduce(sq: torch.Tensor, reduction: str) -> torch.Tensor:
        """Element-wise errors (B, ...) -> a scalar: 'sum' is the sum over everything but the batch,
        averaged over the batch (the papers' reference code); 'mean' is the mean over all elements.
        """
        return sq.sum() / sq.shape[0] if reduction == 'sum' else sq.mean()

    def check_reduction(self, reduction: str) -> str:
        if reduction not in self.REDUCTIONS:
            raise ValueError(f'{type(self).__name__}: reduction must be one of {self.REDUCTIONS}, '
                             f'got {reduction!r}.')
        return reduction

    def setup(self, student_shapes: dict, teacher_shapes: dict, student: nn.Module,
              teacher: nn.Module) -> None:
        """Called once after the dry run with the shape (batch dim removed) of every tap, so that
        projectors are built without channel numbers in the config. The base records how many extra
        (cls, distillation) tokens lead each side's token sequences; subclasses that build modules
        call ``super().setup(...)`` first."""
        self.student_extra = num_extra_tokens(student)
        self.teacher_extra = num_extra_tokens(teacher)
        # A tap named `logits` holds class scores: both sides must score the same classes.
        if 'logits' in student_shapes and 'logits' in teacher_shapes:
            widths = [_class_dim(student_shapes['logits']), _class_dim(teacher_shapes['logits'])]
            if widths[0] != widths[1]:
                raise ValueError(
                    f'{type(self).__name__} ({self.name!r}) compares class scores, but the student '
                    f'tap {self.student_taps["logits"]!r} gives {widths[0]} classes and the '
                    f'teacher '
                    f'tap {self.teacher_taps["logits"]!r} {widths[1]}. Give both heads the same '
                    f'num_classes (the teacher\'s label space), or tap other modules.')

    def term(self, suffix: Optional[str] = None) -> str:
        """The logged name of a term: ``loss_{name}`` or ``loss_{name}_{suffix}``."""
        return f'loss_{self.name}' + (f'_{suffix}' if suffix else '')

    def forward(self,
                student_feats: dict,
                teacher_feats: dict,
                data_samples=None,
                progress: Optional[Progress] = None) -> Dict[str, torch.Tensor]:
        """Return {logged term name: weighted scalar}.

        Args:
            student_feats (dict): {tap name: value or [values]} read on the student.
            teacher_feats (dict): the same on the teacher.
            data_samples (list, optional): the batch's data samples (labels). Defaults to None.
            progress (Progress, optional): where training stands; None outside training.
        """
        raise NotImplementedError
