"""The distiller: a BaseModel that trains a student with distillation losses from a frozen teacher.

One page of architecture:

* ``student`` / ``teacher`` are any OpenMMLab models with the BaseModel API (an mmpretrain
  classifier, an mmdet detector, an mmseg segmentor), given as a model dict, a config file path or
  ``package::path`` (see :mod:`.builder`).
* ``methods`` is a list of registered distillation losses (:class:`mmkd_ext.losses.DistillLoss`). Each
  names the module paths it reads on the student and on the teacher; :class:`.taps.FeatureTaps` reads
  them with forward hooks. A dry run at construction gives every loss the shapes of its taps, so
  projectors are built without channel numbers in the config.
* Training: the teacher runs under ``no_grad`` and stops as soon as every teacher tap has its value;
  the student runs its own ``loss`` (the task loss is kept, scaled by ``student_loss_weight``) while its
  taps are read; each method adds its named, weighted terms.
* ``predict`` / ``tensor`` delegate to the student, so validation and test evaluate the student.
* The teacher is not a registered submodule: it is never in a checkpoint, never given to the
  optimizer or to DDP, and ``train()`` cannot put it in train mode. It is rebuilt from its config and
  checkpoint whenever the distiller is built (also on resume).

The core imports no method: methods plug in through the registry.
"""
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModel

from mmkd_ext.registry import MODELS, build_module
from mmkd_ext.utils.checkpoint import load_state_dict_with_report
from mmkd_ext.utils.config import ModelSpec, load_model_config
from .builder import build_model, freeze
from .taps import FeatureTaps, feature_shape


def _tap_paths(taps) -> List[str]:
    """Flatten a loss's tap spec ({name: path or [paths]}) into a list of paths."""
    paths = []
    for value in taps.values():
        paths += list(value) if isinstance(value, (list, tuple)) else [value]
    return paths


def _select(taps, store):
    """{name: path or [paths]} + {path: value} -> {name: value or [values]}."""
    return {
        name: [store[p] for p in value] if isinstance(value, (list, tuple)) else store[value]
        for name, value in taps.items()
    }


def _shapes(taps, store):
    return {name: feature_shape(v) for name, v in _select(taps, store).items()}


@MODELS.register_module()
class Distiller(BaseModel):
    """Train ``student`` from a frozen ``teacher`` with a list of distillation ``methods``.

    Args:
        student: model dict, config path or ``package::path`` of the student.
        teacher: same, for the teacher.
        methods: configs of registered losses (``DistillLoss`` subclasses), each with its
            ``student_taps`` / ``teacher_taps`` (module paths) and ``loss_weight``.
        teacher_checkpoint: local path or URL of the teacher's weights. ``None`` leaves the teacher
            as initialised (said in the log); use it only for tests.
        teacher_prefix: keep only checkpoint keys under this prefix (stripped) for the teacher.
        teacher_min_matched: fraction of the teacher's entries its checkpoint must fill.
        student_loss_weight: scale of the student's own task losses (e.g. 0.1 in SpectralKD).
        input_shape: (C, H, W) of the dummy input for the dry run that infers tap shapes.
        data_preprocessor: the student's, when its model dict has none (the Runner passes a
            config's top-level ``data_preprocessor`` here). The distiller always runs the student's
            preprocessor (with its batch augments such as Mixup/CutMix), so teacher and student see
            the same batch; the teacher's own preprocessor is not used.
    """

    def __init__(self,
                 student: ModelSpec,
                 teacher: ModelSpec,
                 methods: Sequence[dict] = (),
                 teacher_checkpoint: Optional[str] = None,
                 teacher_prefix: Optional[str] = None,
                 teacher_min_matched: float = 0.5,
                 student_loss_weight: float = 1.0,
                 input_shape: Sequence[int] = (3, 224, 224),
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 init_cfg: Optional[dict] = None):
        student_cfg = load_model_config(student)
        if data_preprocessor is not None:
            # The Runner passes a config's top-level `data_preprocessor` here: it belongs to the
            # student (whose preprocessor, with its batch augments, the distiller uses).
            if 'data_preprocessor' not in student_cfg:
                student_cfg['data_preprocessor'] = data_preprocessor
            elif student_cfg['data_preprocessor'] != data_preprocessor:
                print_log('Distiller: the student model dict has its own data_preprocessor; the '
                          'top-level one of the config is not used.', logger='current', level=30)
        student = build_model(student_cfg)
        super().__init__(data_preprocessor=student.data_preprocessor, init_cfg=init_cfg)
        self.student = student
        self.student_loss_weight = student_loss_weight
        self.input_shape = tuple(input_shape)

        teacher = build_model(teacher)
        if hasattr(teacher, 'init_weights'):
            teacher.init_weights()
        if teacher_checkpoint is not None:
            self.teacher_report = load_state_dict_with_report(
                teacher, teacher_checkpoint, teacher_min_matched, teacher_prefix)
        else:
            print_log('Distiller: no teacher_checkpoint given, the teacher keeps its initial '
                      'weights (fine for tests, wrong for training).', logger='current', level=30)
        # Not a registered submodule: see the module docstring.
        object.__setattr__(self, 'teacher', freeze(teacher))
        self._check_normalisation()

        self.methods = nn.ModuleList([build_module(m) for m in methods])
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError(f'Two methods share a name in {names}: give each a distinct `name`.')
        self.student_taps = FeatureTaps(
            self.student, [p for m in self.methods for p in _tap_paths(m.student_taps)], 'student')
        self.teacher_taps = FeatureTaps(
            self.teacher, [p for m in self.methods for p in _tap_paths(m.teacher_taps)], 'teacher')
        self.teacher_needs_grad = any(m.teacher_needs_grad for m in self.methods)
        self._setup_methods()

    # ----------------------------------------------------------------------------- construction
    @torch.no_grad()
    def _setup_methods(self):
        """Dry run both models on a dummy batch to learn every tap's shape; let methods build."""
        if not self.methods:
            return
        dummy = torch.zeros(2, *self.input_shape)
        was_training = self.student.training
        self.student.eval()
        try:
            with self.student_taps.record(stop_when_complete=True) as s_store:
                self.student(dummy, None, mode='tensor')
            t_store = self.teacher_features(dummy)
        finally:
            self.student.train(was_training)
        for method in self.methods:
            method.setup(_shapes(method.student_taps, s_store),
                         _shapes(method.teacher_taps, t_store),
                         student=self.student, teacher=self.teacher)

    def _check_normalisation(self):
        # The teacher sees the student's preprocessed batch: say so if it was trained otherwise.
        s_pre, t_pre = self.student.data_preprocessor, getattr(self.teacher, 'data_preprocessor',
                                                              None)
        for name in ('mean', 'std'):
            a, b = getattr(s_pre, name, None), getattr(t_pre, name, None)
            if torch.is_tensor(a) and torch.is_tensor(b) and (
                    a.shape != b.shape or not torch.allclose(a, b)):
                print_log(f'Distiller: the teacher\'s data_preprocessor {name} '
                          f'{b.flatten().tolist()} differs from the student\'s '
                          f'{a.flatten().tolist()}; the teacher receives the student\'s input.',
                          logger='current', level=30)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # DropPath/Dropout/BN of the teacher never run in train mode
        return self

    def _apply(self, fn, *args, **kwargs):
        # .to(device) / .half() reach the teacher although it is not a registered submodule.
        super()._apply(fn, *args, **kwargs)
        self.teacher._apply(fn, *args, **kwargs)
        return self

    # ----------------------------------------------------------------------------- forward
    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode in ('predict', 'tensor'):
            return self.student(inputs, data_samples, mode=mode)
        raise RuntimeError(f'Invalid mode {mode!r}: use "loss", "predict" or "tensor".')

    def teacher_features(self, inputs: torch.Tensor, data_samples=None) -> Dict[str, object]:
        """Run the teacher only as far as the taps need. Returns {module path: output}."""
        if not self.teacher_taps.paths:
            return {}
        with torch.set_grad_enabled(self.teacher_needs_grad):
            with self.teacher_taps.record(stop_when_complete=True) as store:
                self.teacher(inputs, data_samples, mode='tensor')
        return store

    def loss(self, inputs: torch.Tensor, data_samples=None) -> Dict[str, torch.Tensor]:
        t_store = self.teacher_features(inputs, data_samples)
        with self.student_taps.record() as s_store:
            student_losses = self.student.loss(inputs, data_samples)
        losses = {}
        for key, value in student_losses.items():
            if 'loss' in key and self.student_loss_weight != 1.0:
                value = ([v * self.student_loss_weight for v in value]
                         if isinstance(value, (list, tuple)) else value * self.student_loss_weight)
            losses[key] = value
        for method in self.methods:
            terms = method(_select(method.student_taps, s_store),
                           _select(method.teacher_taps, t_store), data_samples)
            for key, value in terms.items():
                if key in losses:
                    raise KeyError(f'Loss name {key!r} of method {method.name!r} is already taken; '
                                   f'give the method another `name`.')
                losses[key] = value
        return losses
