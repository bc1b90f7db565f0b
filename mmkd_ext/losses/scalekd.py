"""ScaleKD (Fan et al., NeurIPS 2024, "ScaleKD: Strong Vision Transformers Could Be Excellent
Teachers"): cross attention projectors, dual-view feature mimicking, teacher parameter perception.

* :class:`DualViewMimicLoss`: one student feature -> two CAPs (one per view) -> the teacher's
  feature, compared in the direct view (channel-wise L2-normalised maps) and in the alternative
  view (the same after removing each channel's spatial mean, the DC component of its DCT).
* :class:`ScaleKDLoss`: the composition of the reference configs: stage-3 CAPs -> the frozen
  teacher's last stage (with autograd, :class:`mmkd_ext.utils.teacher_tail.TeacherTail`) -> both
  views against the teacher's final feature; last-stage CAPs whose queries are those proxy
  outputs read the student's last stage -> both views; plus KD at T = 1.
"""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmkd_ext.registry import MODELS, build_module
from mmkd_ext.utils.targets import as_logits
from mmkd_ext.utils.teacher_tail import TeacherTail
from mmkd_ext.utils.tokens import downsampled_grid, feature_map, grid_of, split_tap, tokens_to_map
from .base import DistillLoss, kl_div_with_temperature

Grid = Tuple[int, int]
VIEWS = ('dir', 'alt')


# ----------------------------------------------------------------------------------- the views
def remove_dc(fmap: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> the same minus each channel's spatial mean.

    This is exactly zeroing the (0, 0) coefficient of each channel's 2-D DCT-II and inverting (the
    DC basis function is constant, and the DCT is invertible), without a transform, for any H, W.
    """
    return fmap - fmap.mean(dim=(2, 3), keepdim=True)


def direct_view(fmap: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> each position's channel vector L2-normalised."""
    return F.normalize(fmap, dim=1)


def alternative_view(fmap: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> the DC component removed (:func:`remove_dc`), then L2-normalised over
    channels (as the direct view)."""
    return F.normalize(remove_dc(fmap), dim=1)


def view_distance(pred: torch.Tensor, target: torch.Tensor, view: str) -> torch.Tensor:
    """``sum_{b,c,h,w} (v(pred) - v(target))^2 / B`` for view ``v`` ('dir' or 'alt').

    Args:
        pred, target (Tensor): (B, C, H, W) maps of equal shape; ``target`` is not differentiated.
    Returns:
        a scalar.
    """
    if pred.shape != target.shape:
        raise ValueError(f'ScaleKD compares maps of equal shape, got {tuple(pred.shape)} and '
                         f'{tuple(target.shape)}.')
    fn = direct_view if view == 'dir' else alternative_view
    # float32: a sum over all positions and channels, also under mixed precision
    return (fn(pred.float()) - fn(target.detach().float())).pow(2).sum() / pred.shape[0]


# ----------------------------------------------------------------------------------- set-up helpers
def _stage_pair(value, name: str, cast=float) -> Tuple:
    """A float (both stages) or a (stage-3, last-stage) pair -> a pair."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f'ScaleKDLoss: {name} must be one value or (stage 3, last stage), '
                             f'got {value!r}.')
        return tuple(None if v is None else cast(v) for v in value)
    return (None, None) if value is None else (cast(value), cast(value))


def _dims_and_grid(shape, num_extra: int, grid_shape, where: str) -> Tuple[int, Grid]:
    """Channels and (h, w) grid of a tap from its dry-run shape (batch removed): a map (C, h, w),
    a ``(tokens, (h, w))`` tuple, or tokens (E + N, C) laid on the grid of a ``grid`` tap."""
    if isinstance(shape, list) and len(shape) == 2 and _int_grid(shape[1]):
        return int(shape[0][-1]), tuple(int(v) for v in shape[1])
    if isinstance(shape, tuple) and len(shape) == 3:
        return int(shape[0]), (int(shape[1]), int(shape[2]))
    if isinstance(shape, tuple) and len(shape) == 2:
        patch_grid = None
        if isinstance(grid_shape, list) and len(grid_shape) == 2 and _int_grid(grid_shape[1]):
            patch_grid = tuple(int(v) for v in grid_shape[1])
        elif isinstance(grid_shape, tuple) and len(grid_shape) == 3:
            patch_grid = (int(grid_shape[1]), int(grid_shape[2]))
        if patch_grid is None:
            raise ValueError(
                f'ScaleKD: the {where} tap gives tokens of shape {shape}, which need their '
                f'patch grid: set the {where.split()[0]} `grid` tap to a module that returns '
                f"(tokens, (h, w)), e.g. grid='backbone.patch_embed'.")
        n = shape[0] - num_extra
        grid = downsampled_grid(patch_grid, n)
        if grid[0] * grid[1] != n:
            raise ValueError(f'ScaleKD: the {where} tap has {n} patch tokens, which do not lie '
                             f'on the patch grid {patch_grid} (or a power-of-two reduction).')
        return int(shape[1]), grid
    raise ValueError(f'ScaleKD: cannot read channels and grid from the {where} tap of shape '
                     f'{shape}: tap a map (B, C, H, W), tokens (B, N, C), or a module that '
                     f'returns (tokens, (h, w)).')


def _module(model: nn.Module, path: str) -> Optional[nn.Module]:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def _int_grid(value) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) for v in value))


class _ScaleKDBase(DistillLoss):
    """What both ScaleKD losses share: the view weights and how CAPs are built."""

    def _init_views(self, dir_weight, alt_weight, softmax_scale, num_heads, projector):
        self.dir_weights = _stage_pair(dir_weight, 'dir_weight')
        self.alt_weights = _stage_pair(alt_weight, 'alt_weight')
        self.softmax_scales = _stage_pair(softmax_scale, 'softmax_scale')
        self.num_heads = _stage_pair(num_heads, 'num_heads', int)
        for w in self.dir_weights + self.alt_weights:
            if w < 0:
                raise ValueError(f'{type(self).__name__}: view weights must be >= 0, got '
                                 f'dir_weight={dir_weight!r}, alt_weight={alt_weight!r}.')
        cfg = dict(projector or {})
        cfg.setdefault('type', 'CrossAttentionProjector')
        fixed = {'in_dims', 'out_dims', 'in_grid', 'query_grid', 'learnable_queries'} & set(cfg)
        if fixed:
            raise ValueError(f'{type(self).__name__}: projector sets {sorted(fixed)}, which come '
                             f'from the dry-run shapes; give only options such as '
                             f"stem_norm='LN'.")
        self.projector_cfg = cfg

    def weight(self, view: str, stage: int) -> float:
        return (self.dir_weights if view == 'dir' else self.alt_weights)[stage]

    def _cap(self, stage, in_dims, out_dims, in_grid, query_grid, learnable_queries):
        extra = {}
        if self.num_heads[stage] is not None:
            extra['num_heads'] = self.num_heads[stage]
        if self.softmax_scales[stage] is not None:
            extra['softmax_scale'] = self.softmax_scales[stage]
        cfg = dict(extra, **self.projector_cfg)
        return build_module(
            cfg,
            in_dims=in_dims,
            out_dims=out_dims,
            in_grid=in_grid,
            query_grid=query_grid,
            learnable_queries=learnable_queries)

    def _student_grid(self, student_feats):
        return grid_of(student_feats['grid']) if 'grid' in student_feats else None


@MODELS.register_module()
class DualViewMimicLoss(_ScaleKDBase):
    """ScaleKD's dual-view feature mimicking on one feature pair, usable alone.

    The student feature goes through two :class:`CrossAttentionProjector` (learnable queries on the
    teacher feature's grid, one per view, no shared weights); each output S (B, Ct, h, w) is
    compared with the teacher feature T:

    - direct view: ``w_dir / B * sum_{b,h,w} || n(S) - n(T) ||^2``, n = L2 normalisation over
      channels at each position;
    - alternative view: the same with ``w_alt`` after removing each channel's spatial mean from S
      and T (the DC component of the DCT: :func:`remove_dc`), so that the dominant DC part of a
      large ViT's features does not drown the rest.

    Taps: student ``feat`` (a map, a Swin stage's (tokens, (h, w)), or ViT/Mixer tokens with the
    student ``grid`` tap), teacher ``feat`` (default a Swin teacher's final norm ``backbone.norm3``)
    and teacher ``grid`` (default ``backbone.stages.3``, whose (tokens, (h, w)) output gives the
    grid of the final-norm tokens; for a ViT teacher: ``backbone.patch_embed``).

    Args:
        dir_weight (float): w_dir. Defaults to 0.08 (the reference's).
        alt_weight (float): w_alt. Defaults to 0.06 (the reference's).
        softmax_scale (float): attention sharpening of the CAPs. Defaults to 5.0 (the reference's
            Swin-L configs).
        num_heads (int, optional): CAP heads. Defaults to None (the CAP's rule from Ct).
        projector (dict, optional): further CAP options, e.g. ``dict(stem_norm='LN')`` for ConvNeXt
            students. Defaults to None.

    Returns (forward): ``{'loss_dfm_dir': scalar, 'loss_dfm_alt': scalar}`` (a view of weight 0 is
    absent).
    """
    default_student_taps = dict(feat='backbone.layer4', grid=None)
    default_teacher_taps = dict(feat='backbone.norm3', grid='backbone.stages.3')
    default_name = 'dfm'

    def __init__(self,
                 dir_weight: float = 0.08,
                 alt_weight: float = 0.06,
                 softmax_scale: float = 5.0,
                 num_heads: Optional[int] = None,
                 projector: Optional[dict] = None,
                 **kwargs):
        super().__init__(**kwargs)
        for name, v in (('dir_weight', dir_weight), ('alt_weight', alt_weight), ('softmax_scale',
                                                                                 softmax_scale)):
            if isinstance(v, (list, tuple)):
                raise TypeError(f'DualViewMimicLoss: {name} is one number (one feature pair), '
                                f'got {v!r}.')
        self._init_views(dir_weight, alt_weight, softmax_scale, num_heads, projector)
        self.views = [v for v in VIEWS if self.weight(v, 0) > 0]
        if not self.views:
            raise ValueError('DualViewMimicLoss with dir_weight = alt_weight = 0 computes nothing.')

    def setup(self, student_shapes, teacher_shapes, student, teacher):
        super().setup(student_shapes, teacher_shapes, student, teacher)
        cs, gs = _dims_and_grid(student_shapes['feat'], self.student_extra,
                                student_shapes.get('grid'), 'student feat')
        ct, gt = _dims_and_grid(teacher_shapes['feat'], self.teacher_extra,
                                teacher_shapes.get('grid'), 'teacher feat')
        self.projectors = nn.ModuleDict(
            {view: self._cap(0, cs, ct, gs, gt, learnable_queries=True)
             for view in self.views})

    def forward(self, student_feats, teacher_feats, data_samples=None, progress=None):
        t_grid = grid_of(teacher_feats['grid']) if 'grid' in teacher_feats else None
        target = feature_map(teacher_feats['feat'], self.teacher_extra, t_grid).detach()
        s_grid = self._student_grid(student_feats)
        losses = {}
        for view in self.views:
            pred = self.projectors[view](
                student_feats['feat'],
                query_grid=tuple(target.shape[-2:]),
                grid=s_grid,
                num_extra=self.student_extra)
            pred = tokens_to_map(pred, tuple(target.shape[-2:]))
            losses[self.term(view)] = (
                self.loss_weight * self.weight(view, 0) * view_distance(pred, target, view))
        return losses


@MODELS.register_module()
class ScaleKDLoss(_ScaleKDBase):
    """ScaleKD as its reference configs run it: CAP + dual-view mimicking + teacher parameter
    perception, plus KD.

    For each view v in (direct, alternative), with T the teacher's final feature (the ``final``
    tap, e.g. Swin-L's ``norm3`` output, 1536 @ 7x7 at 224 px):

    1. stage-3 CAP_v (learnable queries at the teacher's stage-3 grid, Ct = its stage-3 width):
       student stage-3 feature -> teacher-format stage-3 tokens P3_v (Swin-L: 196 x 768);
    2. proxy path: P3_v through the frozen teacher's last stage with autograd
       (:class:`TeacherTail`: Swin ``stages[-2].downsample`` + ``stages[-1]`` + final norm; ViT:
       the last ``tail_blocks`` blocks + ``ln1``, led by the teacher's own extra tokens) -> O_v
       (Swin-L: 49 x 1536); term ``s3_v`` = view_v distance(O_v, T);
    3. last-stage CAP_v with O_v as its queries (not detached) reads the student's last-stage
       feature -> S4_v; term ``s4_v`` = view_v distance(S4_v, T);

    and ``kd`` = ``kd_weight * T^2 KL`` on the logits (T = ``tau``). Distances:
    :func:`view_distance` (sum over channels and positions / batch). With the distiller's
    ``student_loss_weight=0.5`` the total is 0.5 task + 0.5 KD + the four feature terms.

    The teacher's own pass (the distiller's) stays under ``no_grad`` and stops at its last tap;
    only the proxy path carries autograd. The teacher is kept as a plain reference (in
    :class:`TeacherTail`), never a registered submodule: no teacher weight is in this loss's state
    dict, in the optimizer or in an exported student; ``copy.deepcopy`` (EMA) shares it.
    ``teacher_needs_grad`` stays False (it would run the whole teacher with autograd).

    Taps:
        student: ``stage3``, ``stage4`` (maps, Swin stages' (tokens, (h, w)), or ViT/Mixer tokens
            with ``grid``: e.g. ``grid='backbone.patch_embed'``), ``logits``.
            Defaults: ResNet ``backbone.layer3``, ``backbone.layer4``, ``head``.
        teacher: ``final`` (the final norm's output: Swin ``backbone.norm3``, ViT
            ``backbone.ln1``), ``stage3`` (the proxy path's input module, whose output gives the
            stage-3 grid and, for ViTs, the extra tokens: Swin ``backbone.stages.2``, ViT
            ``backbone.layers.{L - 1 - tail_blocks}``), ``grid`` (ViT teachers:
            ``backbone.patch_embed``), ``logits``. Defaults: a 4-stage Swin teacher.

    Args:
        softmax_scale (float | tuple): CAP attention sharpening, one value or (stage-3 CAPs,
            last-stage CAPs). Defaults to (5.0, 5.0) (Swin-L configs).
        tail_blocks (int, optional): ViT-style teachers: how many last blocks the proxy path runs
            (required there; None for Swin). Defaults to None.
        dir_weight (float | tuple): direct-view weight, or (stage 3, last stage). Defaults to 0.08.
        alt_weight (float | tuple): alternative-view weight, or (stage 3, last stage).
            Defaults to 0.06.
        kd_weight (float): weight of the KD term (0 switches it and the logits taps off).
            Defaults to 0.5.
        tau (float): KD temperature. Defaults to 1.0.
        num_heads (int | tuple, optional): CAP heads, or (stage 3, last stage). Defaults to None
            (:func:`default_num_heads`: Swin-L 768 -> 16, 1536 -> 24, as the reference).
        projector (dict, optional): further CAP options, e.g. ``dict(stem_norm='LN')`` for
            ConvNeXt students. Defaults to None.

    Returns (forward): ``{'loss_scalekd_s3_dir', 'loss_scalekd_s3_alt', 'loss_scalekd_s4_dir',
    'loss_scalekd_s4_alt', 'loss_scalekd_kd'}`` scalars (terms of weight 0 are absent).
    """
    default_student_taps = dict(
        stage3='backbone.layer3', stage4='backbone.layer4', logits='head', grid=None)
    default_teacher_taps = dict(
        final='backbone.norm3', stage3='backbone.stages.2', logits='head', grid=None)
    default_name = 'scalekd'

    def __init__(self,
                 softmax_scale: Union[float, Sequence[float]] = (5.0, 5.0),
                 tail_blocks: Optional[int] = None,
                 dir_weight: Union[float, Sequence[float]] = 0.08,
                 alt_weight: Union[float, Sequence[float]] = 0.06,
                 kd_weight: float = 0.5,
                 tau: float = 1.0,
                 num_heads: Union[int, Sequence[int], None] = None,
                 projector: Optional[dict] = None,
                 **kwargs):
        super().__init__(**kwargs)
        self._init_views(dir_weight, alt_weight, softmax_scale, num_heads, projector)
        if kd_weight < 0 or tau <= 0:
            raise ValueError(f'ScaleKDLoss: kd_weight must be >= 0 and tau > 0, got '
                             f'kd_weight={kd_weight}, tau={tau}.')
        self.tail_blocks, self.kd_weight, self.tau = tail_blocks, kd_weight, tau
        # A view runs its stage-3 CAP and the proxy path when either of its terms counts (the
        # last-stage CAP takes the proxy outputs as queries).
        self.s3_views = [v for v in VIEWS if self.weight(v, 0) > 0 or self.weight(v, 1) > 0]
        self.s4_views = [v for v in VIEWS if self.weight(v, 1) > 0]
        if not self.s3_views:
            raise ValueError('ScaleKDLoss with all view weights 0 is plain KD: use KDLoss.')
        if not self.s4_views:
            self.student_taps.pop('stage4')
        if kd_weight == 0:
            self.drop_taps('logits')
        for role in ('student', 'teacher'):
            for name, value in getattr(self, f'{role}_taps').items():
                if isinstance(value, (list, tuple)):
                    raise TypeError(f'ScaleKDLoss: {role}_taps[{name!r}] is one module path, got '
                                    f'{value!r}.')

    # --------------------------------------------------------------------------- set-up
    def setup(self, student_shapes, teacher_shapes, student, teacher):
        super().setup(student_shapes, teacher_shapes, student, teacher)
        tail = TeacherTail(teacher, self.tail_blocks)
        # A plain attribute, not a submodule: the teacher never enters state_dict / optimizer.
        object.__setattr__(self, '_tail', tail)
        for name, path in (('final', tail.final_path), ('stage3', tail.input_path)):
            given = self.teacher_taps[name]
            if _module(teacher, given) is not _module(teacher, path):
                raise ValueError(
                    f'ScaleKDLoss: teacher tap {name}={given!r}, but the proxy path of this '
                    f'{type(tail.backbone).__name__} teacher ({tail!r}) '
                    f'{"ends at" if name == "final" else "starts from the output of"} '
                    f'{path!r}: set teacher_taps[{name!r}]={path!r}' +
                    (' (or change tail_blocks).' if tail.tail_blocks else '.'))
        c3, g3 = _dims_and_grid(teacher_shapes['stage3'], tail.num_extra,
                                teacher_shapes.get('grid'), 'teacher stage3')
        if c3 != tail.in_dims:
            raise ValueError(f'ScaleKDLoss: the teacher stage3 tap has {c3} channels, the proxy '
                             f'path takes {tail.in_dims}.')
        # The final grid: what the proxy path makes of the stage-3 grid (run once on zeros).
        with torch.no_grad():
            ref = next(iter(teacher.parameters()))  # the teacher's device and dtype
            zeros = ref.new_zeros(1, g3[0] * g3[1], c3)
            extra = zeros.new_zeros(1, tail.num_extra, c3) if tail.num_extra else None
            out, g4 = tail(zeros, g3, extra)
        c4 = out.shape[-1]
        final = teacher_shapes['final']
        if not (isinstance(final, tuple) and len(final) == 2
                and final == (tail.final_extra + g4[0] * g4[1], c4)):
            raise ValueError(f'ScaleKDLoss: the teacher final tap has shape {final}; the proxy '
                             f'path gives {tail.final_extra} extra + {g4[0] * g4[1]} tokens of '
                             f'{c4} channels.')
        cs3, gs3 = _dims_and_grid(student_shapes['stage3'], self.student_extra,
                                  student_shapes.get('grid'), 'student stage3')
        caps = {
            f's3_{v}': self._cap(0, cs3, c3, gs3, g3, learnable_queries=True)
            for v in self.s3_views
        }
        if self.s4_views:
            cs4, gs4 = _dims_and_grid(student_shapes['stage4'], self.student_extra,
                                      student_shapes.get('grid'), 'student stage4')
            caps.update({
                f's4_{v}': self._cap(1, cs4, c4, gs4, g4, learnable_queries=False)
                for v in self.s4_views
            })
        self.projectors = nn.ModuleDict(caps)

    @property
    def tail(self) -> TeacherTail:
        if '_tail' not in self.__dict__:
            raise RuntimeError('ScaleKDLoss.setup() has not run: the distiller calls it with the '
                               'teacher after its dry run.')
        return self.__dict__['_tail']

    # --------------------------------------------------------------------------- forward
    def _teacher_stage3(self, teacher_feats) -> Tuple[Grid, Optional[torch.Tensor]]:
        """The teacher's stage-3 grid at this input size, and its extra tokens (ViT) detached."""
        tail = self.tail
        t_grid = grid_of(teacher_feats['grid']) if 'grid' in teacher_feats else None
        fmap = feature_map(teacher_feats['stage3'], tail.num_extra, t_grid)
        extra = None
        if tail.num_extra:
            extra = split_tap(teacher_feats['stage3'])[0][:, :tail.num_extra].detach()
        return (int(fmap.shape[-2]), int(fmap.shape[-1])), extra

    def forward(self, student_feats, teacher_feats, data_samples=None, progress=None):
        tail = self.tail
        g3, extra = self._teacher_stage3(teacher_feats)
        s_grid = self._student_grid(student_feats)
        losses: Dict[str, torch.Tensor] = {}
        target = None
        for view in self.s3_views:
            p3 = self.projectors[f's3_{view}'](
                student_feats['stage3'], query_grid=g3, grid=s_grid,
                num_extra=self.student_extra)  # (B, N3, C3)
            o, g4 = tail(p3, g3, extra)  # (B, N4, C4), with autograd through frozen weights
            if target is None:
                target = feature_map(teacher_feats['final'], tail.final_extra, g4).detach()
            if self.weight(view, 0) > 0:
                losses[self.term(f's3_{view}')] = self.loss_weight * self.weight(
                    view, 0) * view_distance(tokens_to_map(o, g4), target, view)
            if view in self.s4_views:
                p4 = self.projectors[f's4_{view}'](
                    student_feats['stage4'],
                    queries=o,
                    query_grid=g4,
                    grid=s_grid,
                    num_extra=self.student_extra)
                losses[self.term(f's4_{view}')] = self.loss_weight * self.weight(
                    view, 1) * view_distance(tokens_to_map(p4, g4), target, view)
        if self.kd_weight > 0:
            kd = kl_div_with_temperature(
                as_logits(student_feats['logits']), as_logits(teacher_feats['logits']), self.tau)
            losses[self.term('kd')] = self.loss_weight * self.kd_weight * kd
        return losses


__all__ = [
    'DualViewMimicLoss', 'ScaleKDLoss', 'remove_dc', 'direct_view', 'alternative_view',
    'view_distance'
]
