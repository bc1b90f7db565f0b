"""The base class every distillation loss derives from."""
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn

TapSpec = Union[str, Sequence[str]]


class DistillLoss(nn.Module):
    """A distillation loss: which features it reads, and the weighted terms it returns.

    A subclass sets ``default_student_taps`` / ``default_teacher_taps`` ({name: module path or list
    of paths}); a config may override them with ``student_taps`` / ``teacher_taps``. The distiller
    reads those modules' outputs with forward hooks and calls ``forward`` with the same structure:
    {name: feature or list of features}.

    Args:
        student_taps: {name: path or [paths]} on the student (overrides the defaults).
        teacher_taps: {name: path or [paths]} on the teacher (overrides the defaults).
        loss_weight: multiplies every term this loss returns.
        name: the prefix of the logged terms (``loss_{name}`` or ``loss_{name}_{term}``).
    """
    default_student_taps: Dict[str, TapSpec] = {}
    default_teacher_taps: Dict[str, TapSpec] = {}
    default_name = 'distill'
    #: set by methods that send gradients through frozen teacher layers (teacher runs with autograd)
    teacher_needs_grad = False

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

    def _check_taps(self, given, default, role):
        taps = dict(default)
        if given is not None:
            if not isinstance(given, dict):
                raise TypeError(f'{type(self).__name__}: {role}_taps must be a dict '
                                f'{{name: module path}}, got {given!r}')
            unknown = set(given) - set(default) if default else set()
            if unknown:
                raise KeyError(f'{type(self).__name__}: unknown {role} tap name(s) {sorted(unknown)}; '
                               f'this loss reads {sorted(default)}.')
            taps.update(given)
        if not taps:
            raise ValueError(f'{type(self).__name__} needs {role}_taps (module paths to read).')
        return taps

    def setup(self, student_shapes: dict, teacher_shapes: dict, student: nn.Module,
              teacher: nn.Module) -> None:
        """Called once after the dry run with the shape (batch dim removed) of every tap, so that
        projectors can be built without channel numbers in the config. Default: nothing to build."""

    def term(self, suffix: Optional[str] = None) -> str:
        """The logged name of a term: ``loss_{name}`` or ``loss_{name}_{suffix}``."""
        return f'loss_{self.name}' + (f'_{suffix}' if suffix else '')

    def forward(self, student_feats: dict, teacher_feats: dict,
                data_samples=None) -> Dict[str, torch.Tensor]:
        raise NotImplementedError
