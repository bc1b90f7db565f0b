"""PAT (Lin et al., "Perspective-Aware Teaching: Adapting Knowledge for Heterogeneous
Distillation"): Region-Aware Attention on the student, Adaptive Feedback Prompts on the teacher, a
hierarchical context loss between them, logit KD and a regulariser on the prompted teacher."""
import weakref
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmkd_ext.distillers.taps import resolve_module
from mmkd_ext.generators.adaptive_feedback_prompt import PromptedPass
from mmkd_ext.registry import MODELS, build_module
from mmkd_ext.utils.targets import as_logits
from mmkd_ext.utils.teacher_tail import frozen_call
from mmkd_ext.utils.tokens import downsampled_grid, feature_map, grid_of, tokens_to_map
from .base import DistillLoss, kl_div_with_temperature


@MODELS.register_module()
class HierarchicalContextLoss(nn.Module):
    """ReviewKD's hierarchical context loss between two maps (B, C, H, W) of the same shape.

    ``[MSE(a, b) + 1/2 MSE(P_4 a, P_4 b) + 1/4 MSE(P_2 a, P_2 b) + 1/8 MSE(P_1 a, P_1 b)] / 1.875``
    with ``P_l`` adaptive average pooling to ``l x l`` and MSE the mean over elements. A level with
    ``l >= H`` is skipped; as in the reference code the weights then halve over the levels that
    remain and the sum is divided by their total (H = 4: ``[MSE + 1/2 MSE(P_2) + 1/4 MSE(P_1)] /
    1.75``).

    Args:
        levels (Sequence[int]): the pooled sizes, in order. Defaults to (4, 2, 1).

    Shapes: student (B, C, H, W), teacher (B, C, H, W) -> a scalar. Tokens (B, L, C) are laid on
    ``grid`` first (or on a square grid when L is a square and no grid is given).
    """

    def __init__(self, levels: Sequence[int] = (4, 2, 1)):
        super().__init__()
        self.levels = tuple(levels)

    @staticmethod
    def _as_map(x: torch.Tensor, grid) -> torch.Tensor:
        if x.dim() == 4:
            return x
        if grid is None:
            side = int(round(x.shape[1]**0.5))
            if side * side != x.shape[1]:
                raise ValueError(f'HierarchicalContextLoss: {x.shape[1]} tokens are not a square '
                                 f'grid; give their (h, w) as `grid`.')
            grid = (side, side)
        return tokens_to_map(x, grid)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, grid=None) -> torch.Tensor:
        student, teacher = self._as_map(student, grid), self._as_map(teacher, grid)
        if student.shape != teacher.shape:
            raise ValueError(f'HierarchicalContextLoss compares maps of one shape, got '
                             f'{tuple(student.shape)} and {tuple(teacher.shape)}.')
        loss = F.mse_loss(student, teacher)
        weight = total = 1.0
        h = student.shape[2]
        for size in self.levels:
            if size >= h:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(
                F.adaptive_avg_pool2d(student, size), F.adaptive_avg_pool2d(teacher, size))
            total += weight
        return loss / total


def _input_channels(model: nn.Module) -> int:
    """Channels of the images ``model`` takes: its preprocessor's mean, else its first conv."""
    mean = getattr(getattr(model, 'data_preprocessor', None), 'mean', None)
    if torch.is_tensor(mean) and mean.numel() > 1:
        return int(mean.numel())
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return 3


@MODELS.register_module()
class PATLoss(DistillLoss):
    """PAT: ``alpha * L_KL + beta * L_FD + gamma * L_Reg`` (the student's own cross-entropy is
    the distiller's student loss, weight ``student_loss_weight``).

    - ``L_KL = T^2 KL(softmax(z_T / T) || softmax(z_S / T))`` against the CLEAN teacher (the
      distiller's pass under ``no_grad``, where no prompt acts).
    - ``L_FD = sum_i HCL(RAA(student stages)_i, prompted teacher stage i)``: the student stages go
      through :class:`~mmkd_ext.projectors.RegionAwareAttention` (region tokens, one attention,
      an aligner per stage to the teacher stage's shape); the prompted teacher is a second teacher
      pass with an :class:`~mmkd_ext.generators.AdaptiveFeedbackPrompt` before each prompted
      stage, run by this loss with autograd through the frozen layers (weights detached) in eval
      mode, so gradients reach the prompts and never the teacher's weights. Token stages are laid
      on their patch grid (extra tokens, which mmpretrain puts FIRST, dropped).
    - ``L_Reg = KL(softmax(z_T) || softmax(z_T'))``, ``z_T'`` the prompted teacher's logits: keeps
      the prompted teacher discriminative (T = 1).

    Feedback: after each training step the block before stage ``i`` keeps ``(aligned student_i -
    prompted teacher_i)``, detached (``prompts.{i}._extra_state`` in the state dict, so it is in
    checkpoints); the next step's prompted pass uses it. The first step has none and skips the
    prompts. Feedback is only kept in training mode (a validation loss does not replace it).

    The prompted pass needs the teacher's input of the step: the loss reads it with a forward
    pre-hook on the teacher (registered at set-up) when the distiller runs the clean pass, and
    keeps the teacher itself unregistered (no state dict, optimizer or export entry).

    Taps: student ``stages`` (list of module paths), ``logits``, ``grid`` (optional: a module
    giving the patch grid, ``backbone.patch_embed``, for token students without one); teacher
    ``stages``, ``logits``, ``grid`` (optional, for ViT-style teachers: Swin blocks give theirs).
    Defaults: ResNet ``backbone.layer1`` ... ``layer4`` and ``head`` on both sides.

    Args:
        alpha (float): weight of L_KL. Defaults to 1.0.
        beta (float): weight of L_FD. Defaults to 1.0.
        gamma (float): weight of L_Reg. Defaults to 1.0.
        tau (float): temperature of L_KL. Defaults to 1.0.
        prompt_stages (Sequence[int], optional): indices of the teacher stages that get a prompt
            block. Defaults to None (all; the paper's best).
        prompt_paths (Sequence[str], optional): per teacher stage, the module path where the
            stage STARTS: its prompt replaces that module's input. A stage runs from after the
            previous stage tap to its own tap, so for ViT blocks 1, 3, 9, 11 the prompts sit
            before blocks 0, 2, 4, 10 (as the reference code); for mmpretrain's ConvNeXt, whose
            downsampling layers are outside its stages, before ``stages.0`` and
            ``downsample_layers.1-3``. Defaults to None: the stage taps themselves (right for
            ResNet ``layer1-4``).
        raa (dict, optional): options of :class:`RegionAwareAttention` (shapes filled at set-up).
            Defaults to ``dict(type='RegionAwareAttention')`` (g 4, d 512, 8 heads).
        prompt (dict, optional): options of :class:`AdaptiveFeedbackPrompt` (channels filled at
            set-up). Defaults to ``dict(type='AdaptiveFeedbackPrompt')``.
        hcl (dict, optional): the feature loss. Defaults to
            ``dict(type='HierarchicalContextLoss')``.

    Returns (forward): ``{'loss_pat_kl', 'loss_pat_hcl', 'loss_pat_reg'}`` (each times
    ``loss_weight``).
    """
    default_student_taps = dict(
        stages=['backbone.layer1', 'backbone.layer2', 'backbone.layer3', 'backbone.layer4'],
        logits='head',
        grid=None)
    default_teacher_taps = dict(
        stages=['backbone.layer1', 'backbone.layer2', 'backbone.layer3', 'backbone.layer4'],
        logits='head',
        grid=None)
    default_name = 'pat'

    def __init__(self,
                 alpha: float = 1.0,
                 beta: float = 1.0,
                 gamma: float = 1.0,
                 tau: float = 1.0,
                 prompt_stages: Optional[Sequence[int]] = None,
                 prompt_paths: Optional[Sequence[str]] = None,
                 raa: Optional[dict] = None,
                 prompt: Optional[dict] = None,
                 hcl: Optional[dict] = None,
                 **kwargs):
        super().__init__(**kwargs)
        for name, value in (('stages', self.student_taps.get('stages')),
                            ('stages', self.teacher_taps.get('stages'))):
            if not isinstance(value, (list, tuple)):
                raise TypeError(f'PATLoss: the `stages` taps must be lists of module paths (one '
                                f'per stage), got {value!r}.')
        if len(self.student_taps['stages']) != len(self.teacher_taps['stages']):
            raise ValueError(f'PATLoss pairs stages: {len(self.student_taps["stages"])} student '
                             f'and {len(self.teacher_taps["stages"])} teacher stage taps.')
        if tau <= 0:
            raise ValueError(f'PATLoss: tau must be > 0, got {tau}.')
        self.alpha, self.beta, self.gamma, self.tau = alpha, beta, gamma, tau
        num = len(self.teacher_taps['stages'])
        self.prompt_stages = sorted(set(range(num) if prompt_stages is None else prompt_stages))
        if any(not 0 <= i < num for i in self.prompt_stages):
            raise ValueError(f'PATLoss: prompt_stages {list(prompt_stages)} must be stage indices '
                             f'in [0, {num}).')
        if prompt_paths is not None and (isinstance(prompt_paths, str) or len(prompt_paths) != num):
            raise ValueError(f'PATLoss: prompt_paths must list one module path per teacher '
                             f'stage ({num}), got {prompt_paths!r}.')
        self.prompt_paths = list(prompt_paths) if prompt_paths is not None else None
        self.raa_cfg = dict(raa or dict(type='RegionAwareAttention'))
        self.prompt_cfg = dict(prompt or dict(type='AdaptiveFeedbackPrompt'))
        self.hcl = build_module(hcl or dict(type='HierarchicalContextLoss'))
        self.raa_cfg.setdefault('type', 'RegionAwareAttention')
        self.prompt_cfg.setdefault('type', 'AdaptiveFeedbackPrompt')
        self._teacher_input = None
        self._in_prompted_pass = False

    # --------------------------------------------------------------------------- set-up
    @staticmethod
    def _map_shape(shape, extra, grid_shape, role, i):
        """A stage's tap shape -> its (C, H, W) as a map."""
        if isinstance(shape, list):  # (tokens, (h, w)) from the module itself
            (n, c), (h, w) = shape[0], shape[1]
            return (c, h, w)
        shape = tuple(shape)
        if len(shape) == 3:
            return shape
        if len(shape) != 2:
            raise ValueError(f'PATLoss: {role} stage {i} has shape {shape}; expected a map '
                             f'(C, H, W) or tokens (L, C).')
        if grid_shape is None:
            raise ValueError(f'PATLoss: {role} stage {i} gives tokens {shape}; set the {role} tap '
                             f"`grid` (e.g. grid='backbone.patch_embed') so they can be laid on "
                             f'their patch grid.')
        n = shape[0] - extra
        h, w = downsampled_grid(tuple(grid_shape), n)
        if h * w != n:
            raise ValueError(f'PATLoss: {role} stage {i} has {n} patch tokens, which do not fit '
                             f'the patch grid {tuple(grid_shape)}.')
        return (shape[1], h, w)

    @staticmethod
    def _grid_shape(shapes):
        shape = shapes.get('grid')
        if shape is None:
            return None
        if isinstance(shape, list) and len(shape) == 2:
            return tuple(shape[1])
        if isinstance(shape, tuple) and len(shape) == 3:
            return tuple(shape[1:])
        raise ValueError(f'PATLoss: the `grid` tap must give (tokens, (h, w)) or a map, got a '
                         f'value of shape {shape}.')

    def setup(self, student_shapes, teacher_shapes, student, teacher):
        super().setup(student_shapes, teacher_shapes, student, teacher)
        # The teacher is used, not owned: never a submodule (state dict, optimizer, export).
        object.__setattr__(self, '_teacher', teacher)
        s_list = self.as_list(student_shapes, 'student', 'stages')
        t_list = self.as_list(teacher_shapes, 'teacher', 'stages')
        s_grid = self._grid_shape(student_shapes)
        in_shapes = [
            self._map_shape(s, self.student_extra, s_grid, 'student', i)
            for i, s in enumerate(s_list)
        ]
        out_shapes = []
        for i, t in enumerate(t_list):
            if isinstance(t, list):
                t = t[0]
            t = tuple(t)
            out_shapes.append(t if len(t) == 3 else (t[0] - self.teacher_extra, t[1]))
        self.raa = build_module(self.raa_cfg, in_shapes=in_shapes, out_shapes=out_shapes)

        for path in self.prompt_paths or []:
            resolve_module(teacher, path, 'teacher')  # a wrong path: an error with near matches
        in_channels = self._probe_stage_inputs(teacher, t_list)
        self.prompts = nn.ModuleDict({
            str(i):
            build_module(
                self.prompt_cfg,
                channels=in_channels[i],
                feedback_channels=out_shapes[i][0] if len(out_shapes[i]) == 3 else out_shapes[i][1])
            for i in self.prompt_stages
        })
        # The prompted pass reruns the teacher on the input of its clean pass: read it when the
        # distiller runs that pass (a weak reference: the hook does not keep the loss alive).
        ref = weakref.ref(self)

        def keep_input(module, args, kwargs):
            loss = ref()
            if loss is not None and not loss._in_prompted_pass:
                x = args[0] if args else kwargs.get('inputs')
                loss._teacher_input = x if torch.is_tensor(x) else None

        teacher.register_forward_pre_hook(keep_input, with_kwargs=True)

    @torch.no_grad()
    def _probe_stage_inputs(self, teacher, t_list):
        """Channels of each teacher stage's INPUT (the prompts' width), from one pass of the
        teacher with recording hooks on a small dummy image. The size is the teacher's patch
        embedding input size, else four times the first stage map's (a stride-4 stem, typical);
        only channel counts are read, and the stage outputs are checked against the dry run's."""
        backbone = getattr(teacher, 'backbone', teacher)
        size = getattr(getattr(backbone, 'patch_embed', None), 'init_input_size', None)
        first = t_list[0][0] if isinstance(t_list[0], list) else t_list[0]
        if size is None:
            side = 4 * first[-1] if len(first) == 3 else 224
            size = (side, side)
        dummy = torch.zeros(2, _input_channels(teacher), *size)
        param = next(teacher.parameters(), None)
        if param is not None:
            dummy = dummy.to(param.device)
        modules, sites = self._stage_modules(teacher)
        passes = PromptedPass(modules, [None] * len(modules), prompt_modules=sites)
        with passes() as store:
            teacher(dummy, None, mode='tensor')
        channels = []
        for i, (x, out, t) in enumerate(zip(store['inputs'], store['stages'], t_list)):
            if x is None:
                raise RuntimeError(f'PATLoss: the teacher never ran the prompt site of stage {i} '
                                   f'on a dummy image: check prompt_paths {self.prompt_paths}.')
            x = x[0] if isinstance(x, (tuple, list)) else x
            out = out[0] if isinstance(out, (tuple, list)) else out
            t = t[0] if isinstance(t, list) else t
            got, want = out.shape[1 if out.dim() == 4 else -1], t[0 if len(t) == 3 else -1]
            if got != want:
                raise RuntimeError(f'PATLoss: teacher stage {i} gave {got} channels on the probe, '
                                   f'{want} in the dry run.')
            channels.append(int(x.shape[1] if x.dim() == 4 else x.shape[-1]))
        return channels

    # --------------------------------------------------------------------------- pieces
    def _stage_modules(self, teacher):
        """(stage modules, prompt-site modules) of ``teacher``."""
        # Looked up at each use, never kept: a kept teacher submodule would be registered (state
        # dict) or deep-copied by EMA.
        stages = [teacher.get_submodule(p) for p in self.tap_paths('teacher', 'stages')]
        sites = stages if self.prompt_paths is None else [
            teacher.get_submodule(p) for p in self.prompt_paths
        ]
        return stages, sites

    def _teacher_input_for(self, batch: int) -> torch.Tensor:
        # The input of the teacher's latest pass (kept, not consumed: timing tools call a loss
        # several times on the features of one pass).
        x = self._teacher_input
        if x is None:
            raise RuntimeError(
                'PATLoss runs the teacher again (its prompted pass) on the input of the clean '
                'teacher pass, but the teacher has not run since set-up: call the loss after the '
                'teacher pass of the same step (Distiller.loss does).')
        if x.shape[0] != batch:
            raise RuntimeError(
                f'PATLoss: the teacher last ran on {x.shape[0]} images but the features are of '
                f'{batch}: call the loss after the teacher pass of the same step.')
        return x

    def prompted_pass(self, inputs: torch.Tensor, grid=None) -> dict:
        """Run the teacher with the prompts, autograd on, weights detached, in eval mode.

        Returns the :class:`PromptedPass` store: ``stages`` (outputs), ``grids``, ``logits``.
        """
        teacher = self._teacher
        if teacher.training:
            raise RuntimeError('PATLoss: the teacher is in train mode; the prompted pass must run '
                               'it in eval mode (the Distiller keeps it there).')
        modules, sites = self._stage_modules(teacher)
        blocks = [
            self.prompts[str(i)] if str(i) in self.prompts else None for i in range(len(modules))
        ]
        passes = PromptedPass(
            modules,
            blocks,
            grid=grid,
            num_extra=self.teacher_extra,
            extra_modules=dict(logits=teacher.get_submodule(self.teacher_taps['logits'])),
            prompt_modules=sites)
        self._in_prompted_pass = True
        try:
            with torch.enable_grad(), passes() as store:
                frozen_call(teacher, inputs, None, mode='tensor')
        finally:
            self._in_prompted_pass = False
        return store

    def forward(self, student_feats, teacher_feats, data_samples=None, progress=None):
        s_logits = as_logits(student_feats['logits'])
        t_logits = as_logits(teacher_feats['logits']).detach()
        s_grid = grid_of(student_feats['grid']) if 'grid' in student_feats else None
        t_grid = grid_of(teacher_feats['grid']) if 'grid' in teacher_feats else None
        s_maps = [
            feature_map(v, self.student_extra, s_grid)
            for v in self.as_list(student_feats, 'student', 'stages')
        ]
        store = self.prompted_pass(self._teacher_input_for(s_logits.shape[0]), t_grid)
        t_maps = PromptedPass.stage_maps(store, self.teacher_extra)
        aligned = self.raa(s_maps, [tuple(t.shape[-2:]) for t in t_maps])
        fd = s_logits.new_zeros(())
        feedback = []
        for i, (a, t) in enumerate(zip(aligned, t_maps)):
            if a.dim() == 3:  # aligned to a token stage: lay it on that stage's grid
                a = tokens_to_map(a, tuple(t.shape[-2:]))
            fd = fd + self.hcl(a, t)
            feedback.append((a - t).detach())
        if self.training:
            for key, block in self.prompts.items():
                block.set_feedback(feedback[int(key)])
        kl = kl_div_with_temperature(s_logits, t_logits, self.tau)
        reg = kl_div_with_temperature(as_logits(store['logits']), t_logits, 1.0)
        w = self.loss_weight
        return {
            self.term('kl'): w * self.alpha * kl,
            self.term('hcl'): w * self.beta * fd,
            self.term('reg'): w * self.gamma * reg,
        }
