"""The distiller: a BaseModel that trains a student with distillation losses from a frozen teacher.

One page of architecture:

* ``student`` / ``teacher`` are any OpenMMLab models with the BaseModel API (an mmpretrain
  classifier, an mmdet detector, an mmseg segmentor), given as a model dict, a config file path or
  ``package::path`` (see :mod:`mmkd_ext.utils.config`).
* ``methods`` is a list of registered distillation losses (:class:`mmkd_ext.losses.DistillLoss`).
Each
  names the module paths it reads on the student and on the teacher; :class:`.taps.FeatureTaps`
  reads
  them with forward hooks. A dry run at construction gives every loss the shapes of its taps, so
  projectors are built without channel numbers in the config.
* Training: the teacher runs under ``no_grad`` on the student's preprocessed batch (converted to the
  teacher's own normalisation when it differs) and stops as soon as every teacher tap has its
  value; the student runs its own ``loss`` (its task terms are kept, scaled by
  ``student_loss_weight``) while its taps are read; each method adds its named, weighted terms,
  given
  the training progress explicitly. A non-finite term stops training with its name.
* ``predict`` / ``tensor`` delegate to the student, so validation and test evaluate the student.
* With ``teacher_cache`` (:mod:`.teacher_cache`) the teacher's logits are read by each batch's
  stream key (:mod:`mmkd_ext.datasets.augment_stream`) instead of running the teacher, which is
  then not built; a manifest that does not match the run, or a method that reads teacher
  features, is refused at construction.
* Compilation (MMEngine's ``compile=True``, or :meth:`Distiller.compile`) compiles two passes, the
  student's ``loss`` with its taps and the teacher's forward to its last tap; the glue between them
  (training progress, loss dict, finite check, the Runner's preprocessing and optimizer step) stays
  eager, so no per-step Python value reaches a graph and nothing recompiles as steps go on.
* The teacher is not a registered submodule: it is never in a checkpoint, never given to the
  optimizer or to DDP, ``train()`` cannot put it in train mode, and ``copy.deepcopy`` (EMA) shares
  it.
  It is rebuilt from its config and checkpoint whenever the distiller is built (also on resume); a
  fingerprint of it in the checkpoint stops a resume with another teacher.

The core imports no method: methods plug in through the registry.
"""
import copy
import hashlib
import inspect
import json
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.dist import get_world_size
from mmengine.logging import MessageHub, print_log
from mmengine.model import BaseModel

from mmkd_ext.datasets.augment_stream import batch_indices, batch_stream_key
from mmkd_ext.losses.base import DistillLoss, Progress
from mmkd_ext.registry import MODELS, build_module
from mmkd_ext.utils.checkpoint import load_state_dict_with_report
from mmkd_ext.utils.config import ModelSpec, config_digest, load_model_config
from mmkd_ext.utils.rng import preserved_rngs
from .builder import build_model, freeze
from .taps import FeatureTaps, feature_shape
from .teacher_cache import TeacherCache, checkpoint_id


def _tap_paths(taps) -> list:
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


def _without_pretrained(cfg):
    """A copy of a model config with every ``init_cfg`` of type 'Pretrained' removed: a teacher that
    has its own checkpoint must not download (or need) other weights only to overwrite them."""
    if isinstance(cfg, dict):
        out = type(cfg)()
        for key, value in cfg.items():
            if key == 'init_cfg':
                items = value if isinstance(value, (list, tuple)) else [value]
                kept = [
                    v for v in items if not (isinstance(v, dict) and v.get('type') == 'Pretrained')
                ]
                value = (kept if isinstance(value, (list, tuple)) else (kept[0] if kept else None))
            out[key] = _without_pretrained(value)
        return out
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_without_pretrained(v) for v in cfg)
    return cfg


def preprocessor_digest(student_cfg) -> str:
    """A digest of what makes the student's training batch from the loaded images: its data
    preprocessor and the batch augments (``train_cfg.augments`` in mmpretrain)."""
    return config_digest(
        dict(
            data_preprocessor=student_cfg.get('data_preprocessor'),
            train_cfg=student_cfg.get('train_cfg')))


def _weights_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()[:16]


def _normalisation(pre):
    """(mean, std, rgb) of a data preprocessor, or None when it does not normalise images."""
    mean, std = getattr(pre, 'mean', None), getattr(pre, 'std', None)
    if not (torch.is_tensor(mean) and torch.is_tensor(std)):
        return None
    if not getattr(pre, '_enable_normalize', True):
        return None
    # Whether it flips the loaded (BGR) channels: mmpretrain `to_rgb`, MMEngine/mmdet
    # `_channel_conversion`, mmseg `channel_conversion`.
    flags = [getattr(pre, n, None) for n in ('to_rgb', '_channel_conversion', 'channel_conversion')]
    rgb = any(bool(f) for f in flags if f is not None)
    return mean.detach().reshape(-1).float(), std.detach().reshape(-1).float(), rgb


def _first_conv_channels(model: nn.Module) -> Optional[int]:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


@MODELS.register_module()
class Distiller(BaseModel):
    """Train ``student`` from a frozen ``teacher`` with a list of distillation ``methods``.

    Args:
        student (dict | str): model dict, config path or ``package::path`` of the student.
        teacher (dict | str): the same, for the teacher.
        methods (list[dict]): configs of registered losses (``DistillLoss`` subclasses), each with
            its ``student_taps`` / ``teacher_taps`` (module paths) and ``loss_weight``.
            Defaults to ().
        teacher_checkpoint (str, optional): local path or URL of the teacher's weights. ``None``
            leaves the teacher as initialised (said in the log); use it only for tests.
            Defaults to None.
        teacher_prefix (str, optional): keep only checkpoint keys under this prefix (stripped) for
            the teacher. Defaults to None.
        teacher_min_matched (float): fraction of the teacher's entries its checkpoint must fill.
            Defaults to 0.5.
        student_loss_weight (float): scale of the student's own task losses (e.g. 0.1 in
            SpectralKD). The student's terms are logged under their own names (a bare ``loss`` of
            the student becomes ``loss_student``), so the logged ``loss`` is the optimised total.
            Defaults to 1.0.
        input_shape (tuple[int], optional): (C, H, W) of the dummy input of the dry run that infers
            tap shapes. Defaults to None: C from the student's data preprocessor (or first
            convolution), (H, W) from its patch embedding's input size, else 224 x 224.
        stop_on_nonfinite (bool): raise, naming the term and the iteration, as soon as a loss term
            is NaN or infinite, instead of training on (and saving) a broken model.
            Defaults to True.
        allow_teacher_change (bool): resume or load a checkpoint written with another teacher
            (config or weights) and train on. Defaults to False: an error at the first step.
        teacher_cache (dict, optional): replay the teacher's logits from a cache built by
            ``tools/build_teacher_cache.py`` instead of running the teacher:
            ``dict(path=DIR, verify_every=0, atol=1e-3)``. The teacher is then not built (with
            ``verify_every=N > 0`` it is, and runs on every N-th step to check the cache within
            ``atol``). Every method must read only the cached teacher tap (the logit methods);
            the run needs ``augment_stream`` (the batches the cache was built for), and the cache
            is refused, naming the field, when its manifest does not match the run
            (``expect``, the run's stream, is filled in by ``mmkd_ext.apis.build_runner``).
            Defaults to None.
        data_preprocessor (dict | nn.Module, optional): the student's, when its model dict has
            none (the Runner passes a config's top-level ``data_preprocessor`` here). The
            distiller always runs the student's preprocessor (with its batch augments such as
            Mixup/CutMix), so teacher and student see the same batch; when the teacher was trained
            with another mean/std or channel order, the batch is converted for it.
            Defaults to None.
        init_cfg (dict, optional): MMEngine init config. Defaults to None.

    Compilation: MMEngine's Runner applies a config's ``compile=True`` (or ``compile=dict(...)``
    of torch.compile options) as ``model.train_step = torch.compile(model.train_step)``. Traced
    whole, the step's Python glue (the message hub's lock behind the training progress, the loss
    dict, the finite check's sync, backward and the optimizer) breaks into over a hundred compiled
    frames, and version counters read in a graph made the in-place check fail. So ``train_step``
    hands over at once to an eager step (``torch.compiler.disable``), told by
    ``torch.compiler.is_compiling()`` that compilation was asked for, and that step calls
    :meth:`compile` with the config's options (read from the config text MMEngine keeps in the
    message hub): the student's ``loss`` with its taps and the teacher's forward to its last tap
    (see :mod:`.taps`) are compiled, one graph each; all else runs eagerly. Under DDP the Runner
    compiles its wrapper's ``train_step``, which does not come here.
    """

    def __init__(self,
                 student: ModelSpec,
                 teacher: ModelSpec,
                 methods: Sequence[dict] = (),
                 teacher_checkpoint: Optional[str] = None,
                 teacher_prefix: Optional[str] = None,
                 teacher_min_matched: float = 0.5,
                 student_loss_weight: float = 1.0,
                 input_shape: Optional[Sequence[int]] = None,
                 stop_on_nonfinite: bool = True,
                 allow_teacher_change: bool = False,
                 teacher_cache: Optional[dict] = None,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 init_cfg: Optional[dict] = None):
        if isinstance(methods, dict) or not isinstance(methods, (list, tuple)):
            raise TypeError(
                f'Distiller `methods` must be a list of loss configs, e.g. '
                f"methods=[dict(type='KDLoss', tau=1.0)], got a {type(methods).__name__}: "
                f'{methods!r}')
        student_cfg = load_model_config(student)
        if data_preprocessor is not None:
            # The Runner passes a config's top-level `data_preprocessor` here: it belongs to the
            # student (whose preprocessor, with its batch augments, the distiller uses).
            if 'data_preprocessor' not in student_cfg:
                student_cfg['data_preprocessor'] = data_preprocessor
            elif student_cfg['data_preprocessor'] != data_preprocessor:
                print_log(
                    'Distiller: the student model dict has its own data_preprocessor; the '
                    'top-level one of the config is not used.',
                    logger='current',
                    level=30)
        student = build_model(student_cfg, role='student')
        pre_digest = preprocessor_digest(student_cfg)
        super().__init__(data_preprocessor=student.data_preprocessor, init_cfg=init_cfg)
        self.student = student
        self.student_preprocessor_digest = pre_digest
        self.student_loss_weight = student_loss_weight
        self.stop_on_nonfinite = stop_on_nonfinite
        self.allow_teacher_change = allow_teacher_change
        self.input_shape = tuple(input_shape) if input_shape else self._infer_input_shape()

        self.methods = nn.ModuleList([self._build_method(m, i) for i, m in enumerate(methods)])
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError(f'Two methods share a name in {names}: give each a distinct `name`.')
        teacher_paths = [p for m in self.methods for p in _tap_paths(m.teacher_taps)]
        self.teacher_needs_grad = any(m.teacher_needs_grad for m in self.methods)

        teacher_cfg = load_model_config(teacher)
        if teacher_checkpoint is not None:
            teacher_cfg = _without_pretrained(teacher_cfg)
        self.teacher_fingerprint = dict(config=config_digest(teacher_cfg), weights=None)
        self.teacher_cache = None
        if teacher_cache is not None:
            self._open_teacher_cache(teacher_cache, teacher_checkpoint)
        teacher = None
        if self.teacher_cache is None or self.cache_verify_every:
            # The teacher's random init draws nothing from the global generators: the student's
            # init (the Runner's, after this) is the same with a teacher, another one or a cache.
            with preserved_rngs():
                teacher = build_model(teacher_cfg, role='teacher')
                if hasattr(teacher, 'init_weights'):
                    teacher.init_weights()
            if teacher_checkpoint is not None:
                self.teacher_report = load_state_dict_with_report(teacher, teacher_checkpoint,
                                                                  teacher_min_matched,
                                                                  teacher_prefix)
                if self.teacher_cache is None:
                    self.teacher_fingerprint['weights'] = _weights_digest(teacher)
            else:
                print_log(
                    'Distiller: no teacher_checkpoint given, the teacher keeps its initial '
                    'weights (fine for tests, wrong for training).',
                    logger='current',
                    level=30)
            teacher = freeze(teacher)
        # Not a registered submodule: see the module docstring. None when a cache replaces it.
        object.__setattr__(self, 'teacher', teacher)
        self._loaded_fingerprint = None
        self._setup_input_conversion()

        self.student_taps = FeatureTaps(
            self.student, [p for m in self.methods for p in _tap_paths(m.student_taps)], 'student')
        self.teacher_taps = (
            FeatureTaps(self.teacher, teacher_paths, 'teacher') if teacher is not None else None)
        self._compiled_passes: Optional[dict] = None  # {'student': fn, 'teacher': fn}
        self._setup_methods()

    # ----------------------------------------------------------------------------- construction
    @staticmethod
    def _build_method(cfg, index: int) -> DistillLoss:
        if not isinstance(cfg, dict) or 'type' not in cfg:
            raise TypeError(f'Distiller methods[{index}] must be a loss config dict with a `type`, '
                            f"e.g. dict(type='KDLoss'); got {cfg!r}")
        method = build_module(cfg)
        if not isinstance(method, DistillLoss):
            raise TypeError(
                f'Distiller methods[{index}] (type {cfg["type"]!r}) built a '
                f'{type(method).__module__}.{type(method).__name__}, which is not an mmkd_ext '
                f'distillation loss (a DistillLoss subclass with student/teacher taps). Use one of '
                f'mmkd_ext\'s losses (see docs/methods/), e.g. type=\'mmkd_ext.KDLoss\', or wrap '
                f'the loss in a DistillLoss (docs/distiller.md, "Adding a method").')
        params = inspect.signature(method.forward).parameters
        if 'progress' not in params and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            raise TypeError(f'{type(method).__name__}.forward must accept `progress=None` (the '
                            f'training progress the distiller passes); see DistillLoss.forward.')
        return method

    def _open_teacher_cache(self, spec, teacher_checkpoint):
        """Open ``teacher_cache``, check its manifest against this run and the methods' taps."""
        if not isinstance(spec, dict) or 'path' not in spec or set(spec) - {
                'path', 'verify_every', 'atol', 'expect'
        }:
            raise TypeError(f'teacher_cache must be dict(path=DIR, verify_every=0, atol=1e-3), '
                            f'got {spec!r}.')
        if spec.get('expect') is None:
            raise ValueError(
                'teacher_cache needs the run\'s augmentation stream: set augment_stream='
                'dict(seed=...) in the config and build the runner with tools/train.py (or '
                'mmkd_ext.apis.build_runner), which fills in teacher_cache.expect.')
        cache = TeacherCache(spec['path'])
        cache.check(
            dict(
                teacher_config=self.teacher_fingerprint['config'],
                teacher_checkpoint=checkpoint_id(teacher_checkpoint),
                student_preprocessor=self.student_preprocessor_digest,
                stream=dict(spec['expect'])))
        tap = cache.manifest['tap']
        for m in self.methods:
            paths = _tap_paths(m.teacher_taps)
            if m.teacher_needs_grad or any(p != tap for p in paths):
                raise ValueError(
                    f'Method {m.name!r} ({type(m).__name__}) reads the teacher at {paths}, but '
                    f'the teacher cache {cache.path!r} holds only the teacher\'s logits at '
                    f'{tap!r}: feature methods need the live teacher. Remove `teacher_cache` '
                    f'from the model, or use the cache with logit methods only (KD, hard KD, '
                    f'NKD, DKD).')
        self.teacher_cache = cache
        self.cache_verify_every = int(spec.get('verify_every') or 0)
        self.cache_atol = float(spec.get('atol', 1e-3))
        self.teacher_fingerprint = dict(cache.manifest['teacher_fingerprint'])
        how = (f'run every {self.cache_verify_every} steps to check it'
               if self.cache_verify_every else 'not built')
        print_log(
            f'Distiller: the teacher\'s {tap!r} outputs are read from the cache {cache.path!r} '
            f'(epochs {cache.epochs}, {cache.storage}); the teacher is {how}.',
            logger='current')

    def _infer_input_shape(self):
        norm = _normalisation(self.student.data_preprocessor)
        channels = (
            len(norm[0])
            if norm is not None and len(norm[0]) > 1 else _first_conv_channels(self.student) or 3)
        backbone = getattr(self.student, 'backbone', self.student)
        size = getattr(getattr(backbone, 'patch_embed', None), 'init_input_size', None)
        size = tuple(size) if size is not None else (224, 224)
        return (channels, *size)

    @torch.no_grad()
    def _setup_methods(self):
        """Dry run both models on a dummy batch to learn every tap's shape; let methods build."""
        if not self.methods:
            return
        dummy = torch.zeros(2, *self.input_shape)
        was_training = self.student.training
        self.student.eval()
        try:
            s_store = {}
            try:
                with self.student_taps.record() as s_store:
                    self.student(dummy, None, mode='tensor')
            except (RuntimeError, ValueError, TypeError, IndexError):
                # Past its taps the forward does not matter for shapes: a two-stage detector's
                # tensor mode needs image metas (data samples) after its neck.
                if not all(p in s_store for p in self.student_taps.paths):
                    raise
            self.student_taps.check_unchanged(s_store)
            if self.teacher_cache is not None:
                t_store = {
                    self.teacher_cache.manifest['tap']: torch.zeros(2,
                                                                    self.teacher_cache.num_classes)
                }
            else:
                t_store = self.teacher_features(dummy)
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            if 'modified in place' in str(e) or 'never ran the tapped' in str(e):
                raise
            raise RuntimeError(
                f'The dry run that infers tap shapes failed on a dummy batch of shape '
                f'{tuple(dummy.shape)}: {type(e).__name__}: {e}\nIf the models take other '
                f'inputs, set `input_shape=(C, H, W)` in the distiller config to what the student '
                f'takes (e.g. input_shape=(1, 8, 8) for 8x8 grey images).') from e
        finally:
            self.student.train(was_training)
        for method in self.methods:
            method.setup(
                _shapes(method.student_taps, s_store),
                _shapes(method.teacher_taps, t_store),
                student=self.student,
                teacher=self.teacher)

    def _setup_input_conversion(self):
        """The teacher sees the student's preprocessed batch; when the teacher was trained with
        another mean/std or channel order, convert it: x_t = (P(x_s * std_s + mean_s) - mean_t) /
        std_t, P the channel flip when one side reads RGB and the other BGR."""
        self.teacher_input_conversion = None
        s = _normalisation(self.student.data_preprocessor)
        t = _normalisation(getattr(self.teacher, 'data_preprocessor', None))
        if s is None or t is None:
            return
        (ms, ss, rs), (mt, st, rt) = s, t
        same = (
            rs == rt and ms.shape == mt.shape and torch.allclose(ms, mt) and torch.allclose(ss, st))
        if same:
            return
        if len(ms) != len(mt) and not (len(ms) == 1 or len(mt) == 1):
            raise ValueError(f'Student and teacher normalise {len(ms)} and {len(mt)} channels: '
                             f'they cannot share a batch.')
        self.teacher_input_conversion = dict(flip=rs != rt)
        shape = (1, -1, 1, 1)
        self.register_buffer('_s_mean', ms.reshape(shape), persistent=False)
        self.register_buffer('_s_std', ss.reshape(shape), persistent=False)
        self.register_buffer('_t_mean', mt.reshape(shape), persistent=False)
        self.register_buffer('_t_std', st.reshape(shape), persistent=False)
        print_log(
            f'Distiller: the teacher was trained with mean {mt.tolist()}, std {st.tolist()}'
            f'{" and the other channel order" if rs != rt else ""}; the student\'s batch '
            f'(mean {ms.tolist()}, std {ss.tolist()}) is converted for it.',
            logger='current')

    def teacher_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """The student's preprocessed batch (B, C, H, W) as the teacher's own preprocessor would
        have made it from the same images."""
        if self.teacher_input_conversion is None:
            return inputs
        raw = inputs * self._s_std + self._s_mean
        if self.teacher_input_conversion['flip']:
            raw = raw.flip(1)
        return (raw - self._t_mean) / self._t_std

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # DropPath/Dropout/BN of the teacher never run in train mode
        return self

    def _apply(self, fn, *args, **kwargs):
        # .to(device) / .half() reach the teacher although it is not a registered submodule.
        super()._apply(fn, *args, **kwargs)
        if self.teacher is not None:
            self.teacher._apply(fn, *args, **kwargs)
        return self

    def __deepcopy__(self, memo):
        # EMA (and anything else) deep-copies the model: the frozen teacher and its taps are shared,
        # never copied, so an EMA recipe does not hold a second teacher.
        memo[id(self.teacher)] = self.teacher
        memo[id(self.teacher_taps)] = self.teacher_taps
        memo[id(self.teacher_cache)] = self.teacher_cache
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            object.__setattr__(new, key, copy.deepcopy(value, memo))
        # The compiled passes are bound to this distiller: a copy runs its own passes eagerly.
        new._compiled_passes = None
        return new

    # ----------------------------------------------------------------------------- checkpoints
    def get_extra_state(self):
        # Saved with the student in every checkpoint: which teacher this run distils from. A tensor
        # (JSON bytes), since MMEngine broadcasts every state-dict entry in distributed runs.
        data = json.dumps(dict(teacher_fingerprint=self.teacher_fingerprint)).encode()
        return torch.tensor(list(data), dtype=torch.uint8)

    def set_extra_state(self, state):
        if torch.is_tensor(state) and state.dtype == torch.uint8:
            try:
                state = json.loads(bytes(state.tolist()).decode())
            except ValueError:
                return
        if isinstance(state, dict):
            self._loaded_fingerprint = state.get('teacher_fingerprint')

    def _check_teacher_fingerprint(self):
        loaded, own = self._loaded_fingerprint, self.teacher_fingerprint
        if loaded is None or self.allow_teacher_change:
            return
        differ = [
            k for k in ('config', 'weights')
            if loaded.get(k) is not None and own.get(k) is not None and loaded[k] != own[k]
        ]
        if differ:
            raise RuntimeError(
                f'The checkpoint being resumed was trained with another teacher (its '
                f'{" and ".join(differ)} differ: checkpoint {loaded}, now {own}). Continuing would '
                f'switch teachers mid-training. Use the teacher config and teacher_checkpoint of '
                f'that run, or set `model.allow_teacher_change=True` to continue on purpose.')
        self._loaded_fingerprint = None

    # ----------------------------------------------------------------------------- compile
    def compile(self, **kwargs) -> None:
        """Compile the student's and the teacher's passes; the glue between them stays eager.

        Args:
            **kwargs: options of ``torch.compile`` (``backend``, ``mode``, ``dynamic``, ...),
                applied to both passes.
        """
        print_log(
            'Distiller: compiling the student pass and the teacher pass (to its last tap); the '
            'glue between them runs eagerly.',
            logger='current')
        # By default dynamo does not guard on a module's empty hook dicts: a graph that one compile
        # of the student (or of a teacher of the same class) made without the tap hooks would be
        # reused with them, and the taps would never fire. Guarding costs a dict check per module.
        torch._dynamo.config.skip_nnmodule_hook_guards = False
        self._compiled_passes = dict(
            student=torch.compile(self._student_pass, **kwargs),
            teacher=torch.compile(self._teacher_pass, **kwargs))

    def train_step(self, data, optim_wrapper):
        # Under the Runner's torch.compile(train_step) this frame is traced, and is_compiling() is
        # True in it; tracing stops at the eager step (see the class docstring).
        return self._eager_train_step(data, optim_wrapper, torch.compiler.is_compiling())

    @torch.compiler.disable
    def _eager_train_step(self, data, optim_wrapper, compile_requested: bool):
        if compile_requested and self._compiled_passes is None:
            self.compile(**self._config_compile_options())
        return super().train_step(data, optim_wrapper)

    @staticmethod
    def _config_compile_options() -> dict:
        """The options of the config's ``compile=dict(...)``: the Runner hands the model only the
        compiled method, and MMEngine's RuntimeInfoHook puts the config's text in the message
        hub."""
        text = MessageHub.get_current_instance().get_info('cfg')
        if text is None:
            return {}
        try:
            options = Config.fromstring(text, '.py').get('compile')
        except Exception as e:  # noqa: BLE001 (any config text that does not parse back)
            print_log(
                f'Distiller: the config text in the message hub does not parse ({type(e).__name__}:'
                f' {e}); the passes compile with torch.compile\'s defaults.',
                logger='current',
                level=30)
            return {}
        return dict(options) if isinstance(options, dict) else {}

    def _pass(self, name: str):
        """The 'student' or 'teacher' pass: compiled after :meth:`compile`, else the method."""
        if self._compiled_passes is not None:
            return self._compiled_passes[name]
        return self._student_pass if name == 'student' else self._teacher_pass

    def _student_pass(self, inputs: torch.Tensor, data_samples) -> dict:
        return self.student.loss(inputs, data_samples)

    def _teacher_pass(self, inputs: torch.Tensor, data_samples) -> None:
        # Returns nothing: compiled, the graph's outputs are the taps only (see .taps).
        self.teacher(self.teacher_inputs(inputs), data_samples, mode='tensor')

    # ----------------------------------------------------------------------------- forward
    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode in ('predict', 'tensor'):
            return self.student(inputs, data_samples, mode=mode)
        raise RuntimeError(f'Invalid mode {mode!r}: use "loss", "predict" or "tensor".')

    def teacher_features(self, inputs: torch.Tensor, data_samples=None) -> Dict[str, object]:
        """Run the teacher only as far as the taps need. Returns {module path: output}."""
        if self.teacher_taps is None or not self.teacher_taps.paths:
            return {}
        with torch.set_grad_enabled(self.teacher_needs_grad):
            with self.teacher_taps.record(stop_when_complete=True) as store:
                self._pass('teacher')(inputs, data_samples)
        return store

    def cached_teacher_features(self, inputs: torch.Tensor, data_samples,
                                progress: Progress) -> Dict[str, torch.Tensor]:
        """The teacher's cached outputs for this batch, found by the batch's stream key; on every
        ``verify_every``-th step the live teacher is run and compared."""
        cache = self.teacher_cache
        key = batch_stream_key(data_samples)
        if key is None:
            raise RuntimeError(
                'Distiller: a teacher cache is read by the stream key of each batch, and this '
                'batch has none. Set augment_stream=dict(seed=...) in the config (the one the '
                'cache was built with) and train with tools/train.py.')
        world = get_world_size()
        if world != cache.manifest['world_size']:
            raise ValueError(
                f'The teacher cache {cache.path!r} was built for {cache.manifest["world_size"]} '
                f'process(es), this run has {world}: the batches differ. Rebuild it with '
                f'--world-size {world} (or through tools/dist_*.sh with {world} processes).')
        tap = cache.manifest['tap']
        logits = cache.read(key.epoch, key.step, key.rank, batch_indices(data_samples),
                            inputs.device)
        if self.cache_verify_every and progress.iter % self.cache_verify_every == 0:
            with torch.no_grad():
                live = self.teacher_features(inputs, data_samples)[tap]
            cache.verify(logits, live, self.cache_atol)
        return {tap: logits}

    @staticmethod
    def progress() -> Progress:
        """The training progress, from MMEngine's message hub (what the Runner's loops record)."""
        info = MessageHub.get_current_instance().runtime_info
        return Progress(
            epoch=int(info.get('epoch', 0)),
            max_epochs=info.get('max_epochs'),
            iter=int(info.get('iter', 0)),
            max_iters=info.get('max_iters'))

    def loss(self, inputs: torch.Tensor, data_samples=None) -> Dict[str, torch.Tensor]:
        self._check_teacher_fingerprint()
        progress = self.progress()
        if self.teacher_cache is not None:
            t_store = self.cached_teacher_features(inputs, data_samples, progress)
        else:
            t_store = self.teacher_features(inputs, data_samples)
            self.teacher_taps.check_unchanged(t_store)
        with self.student_taps.record() as s_store:
            student_losses = self._pass('student')(inputs, data_samples)
        self.student_taps.check_unchanged(s_store)
        losses = {}
        for key, value in student_losses.items():
            if 'loss' in key and self.student_loss_weight != 1.0:
                value = ([v * self.student_loss_weight
                          for v in value] if isinstance(value, (list, tuple)) else value *
                         self.student_loss_weight)
            # MMEngine logs the optimised total as `loss`; a student term of that name would
            # overwrite it in the log.
            losses['loss_student' if key == 'loss' else key] = value
        for method in self.methods:
            terms = method(
                _select(method.student_taps, s_store),
                _select(method.teacher_taps, t_store),
                data_samples,
                progress=progress)
            for key, value in terms.items():
                if key in losses:
                    raise KeyError(f'Loss name {key!r} of method {method.name!r} is already taken; '
                                   f'give the method another `name`.')
                losses[key] = value
        if self.stop_on_nonfinite:
            self._check_finite(losses, progress)
        return losses

    @staticmethod
    def _check_finite(losses: dict, progress: Progress) -> None:
        terms = [(k, v) for k, v in losses.items() if 'loss' in k]
        flat = [(k, t) for k, v in terms for t in (v if isinstance(v, (list, tuple)) else [v])
                if torch.is_tensor(t)]
        if not flat:
            return
        # One device sync per step for all terms; the names are looked up only on failure.
        if bool(torch.stack([t.detach().float().sum() for _, t in flat]).isfinite().all()):
            return
        bad = next(k for k, t in flat if not bool(t.detach().float().isfinite().all()))
        values = {k: float(t.detach().float().sum()) for k, t in flat}
        raise FloatingPointError(
            f'Loss term {bad!r} is not finite at iteration {progress.iter} (epoch '
            f'{progress.epoch}); all terms: {values}. Training stopped so that no broken '
            f'checkpoint is saved. Lower the learning rate or the method\'s loss_weight, check '
            f'the inputs and the teacher; set `model.stop_on_nonfinite=False` to train on anyway.')
