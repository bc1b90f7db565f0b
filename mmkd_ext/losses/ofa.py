"""OFA (Hao et al., "One-for-All: Bridge the Gap Between Heterogeneous Architectures in Knowledge
Distillation", NeurIPS 2023): exit branches on the student's stages, each distilled in logit space
with an adaptive target-enhanced loss."""
import math
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmkd_ext.registry import MODELS, build_module
from mmkd_ext.utils.targets import as_logits, class_targets
from mmkd_ext.utils.tokens import downsampled_grid
from .base import DistillLoss


def ofa_loss(student_logits: torch.Tensor,
             teacher_logits: torch.Tensor,
             target: torch.Tensor,
             eps: float,
             temperature: float = 1.0) -> torch.Tensor:
    """OFA's loss: mean over the batch of ``sum_c -[(p_t,c + y_c)^eps - y_c] * log p_s,c``.

    With ``eps = 1`` it is the cross-entropy to the teacher's soft targets; ``eps > 1`` enlarges the
    weight of the target class (and raises the non-target probabilities to the power eps).

    Args:
        student_logits (Tensor): (B, C).
        teacher_logits (Tensor): (B, C), detached here.
        target (Tensor): y, (B, C): one-hot, or a soft label (rows summing to 1).
        eps (float): the exponent.
        temperature (float): softmax temperature of both sides. Defaults to 1.

    Returns:
        Tensor: a scalar.
    """
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits.detach() / temperature, dim=1)
    weight = (p_t + target).pow(eps) - target
    return -(weight * log_p_s).sum(dim=1).mean()


def _head_width(model: nn.Module, num_classes: int, role: str) -> int:
    """The width of the features a classifier's head maps to ``num_classes`` scores: the input
    width of the head's last Linear with ``num_classes`` outputs."""
    if model is None:
        raise ValueError(f'OFALoss: the {role} is not built (its logits come from a teacher '
                         f'cache), so its feature width cannot be read: set `{role}_final_dims` '
                         f'(the input width of its head\'s last Linear, e.g. 768 for ViT-B).')
    head = getattr(model, 'head', None)
    linears = [
        m for m in (head.modules() if head is not None else [])
        if isinstance(m, nn.Linear) and m.out_features == num_classes
    ]
    if not linears:
        raise ValueError(f'OFALoss: cannot find the {role} head\'s final Linear with {num_classes} '
                         f'outputs to read its feature width; set `{role}_final_dims`.')
    return linears[-1].in_features


@MODELS.register_module()
class OFALoss(DistillLoss):
    """OFA: an exit branch (:class:`~mmkd_ext.projectors.OFAExitBranch`) after each tapped student
    stage turns its features into class logits; every branch's logits, and the student's own
    logits, are pulled to the teacher's final logits with :func:`ofa_loss`.

    ``L = loss_weight * sum_i ofa(branch_i(F_i), z_t; eps_i) + head_weight * ofa(z_s, z_t; eps_h)``;
    the student's own task loss (cross-entropy with label smoothing in OFA's recipes) is the
    student's head loss, kept by the distiller.

    Labels: y is the one-hot of the label. With Mixup/CutMix the batch carries soft labels
    (``gt_score``): ``soft_label='argmax'`` (default, as the reference code) uses the one-hot of the
    dominant class; ``'mix'`` uses the mixed label itself as y, so that both mixed classes are
    enhanced (with eps = 1 both give the plain soft-target cross-entropy).

    Branch sizes come from the dry-run shapes: CNN stages get ``max(C_s, C_t)`` wide branches
    (C_s, C_t the widths the student's and teacher's heads read), token stages the student's
    final width. The branches train with the student and are dropped on export.

    Taps: student ``logits`` (default ``head``), ``stages`` (a list of stage outputs, first to
    last; none by default: the configs name them), optional ``grid`` (a module giving the patch
    grid, e.g. ``backbone.patch_embed``, for token students with non-square grids; without it the
    grid of N patch tokens is sqrt(N) x sqrt(N)); teacher ``logits`` (default ``head``).

    Args:
        eps (float | list[float]): the exponent, one for all or one per stage plus one for the
            head (last). Defaults to 1.0 (OFA: 1.5 on ImageNet, 1.0 on CIFAR-100).
        temperature (float): softmax temperature. Defaults to 1.0.
        head_weight (float): weight of the term on the student's own logits. Defaults to 1.0.
        soft_label (str): 'argmax' or 'mix' (see above). Defaults to 'argmax'.
        stage_indices (list[int], optional): the 1-based stage number of each tapped stage (the
            number of down-sampling blocks depends on it). Defaults to 1..len(stages) counted to
            end at ``num_stages``.
        num_stages (int): stages of the student. Defaults to 4.
        student_final_dims (int, optional): C_s; read from the student's head when None.
            Defaults to None.
        teacher_final_dims (int, optional): C_t; read from the teacher's head when None.
            Defaults to None.
        branch (dict, optional): config of the branches (shapes filled at set-up).
            Defaults to ``dict(type='OFAExitBranch')``.
        loss_weight (float): weight of the branch terms. Defaults to 1.0.

    Returns (forward): ``{'loss_ofa_stage{k}': ..., 'loss_ofa_head': ...}``, k the 1-based stage
    number.
    """
    default_student_taps = dict(logits='head', stages=None, grid=None)
    default_teacher_taps = dict(logits='head')
    default_name = 'ofa'
    SOFT_LABELS = ('argmax', 'mix')

    def __init__(self,
                 eps: Union[float, Sequence[float]] = 1.0,
                 temperature: float = 1.0,
                 head_weight: float = 1.0,
                 soft_label: str = 'argmax',
                 stage_indices: Optional[Sequence[int]] = None,
                 num_stages: int = 4,
                 student_final_dims: Optional[int] = None,
                 teacher_final_dims: Optional[int] = None,
                 branch: Optional[dict] = None,
                 **kwargs):
        super().__init__(**kwargs)
        if soft_label not in self.SOFT_LABELS:
            raise ValueError(f'OFALoss soft_label must be one of {self.SOFT_LABELS}, got '
                             f'{soft_label!r}.')
        eps_list = list(eps) if isinstance(eps, (list, tuple)) else [eps]
        if any(not (isinstance(e, (int, float)) and e > 0) for e in eps_list):
            raise ValueError(f'OFALoss eps must be positive numbers, got {eps!r}.')
        if temperature <= 0:
            raise ValueError(f'OFALoss temperature must be > 0, got {temperature}.')
        self.eps, self.temperature, self.head_weight = eps, temperature, head_weight
        self.soft_label, self.num_stages = soft_label, num_stages
        self.stage_indices = list(stage_indices) if stage_indices is not None else None
        self.final_dims = dict(student=student_final_dims, teacher=teacher_final_dims)
        self.branch_cfg = branch or dict(type='OFAExitBranch')
        self.branches = nn.ModuleList()

    def setup(self, student_shapes, teacher_shapes, student, teacher):
        super().setup(student_shapes, teacher_shapes, student, teacher)
        self.num_classes = int(teacher_shapes['logits'][-1] if isinstance(
            teacher_shapes['logits'], tuple) else teacher_shapes['logits'][0][-1])
        stages = self.as_list(student_shapes, 'student', 'stages') if 'stages' in \
            self.student_taps else []
        indices = self.stage_indices or list(
            range(self.num_stages - len(stages) + 1, self.num_stages + 1))
        if len(indices) != len(stages):
            raise ValueError(f'OFALoss: {len(stages)} stage taps but stage_indices {indices}.')
        eps = self.eps if isinstance(self.eps, (list, tuple)) else [self.eps] * (len(stages) + 1)
        if len(eps) != len(stages) + 1:
            raise ValueError(f'OFALoss: eps {list(eps)} needs one value per stage ({len(stages)}) '
                             f'plus one for the head, or a single value.')
        self.eps_list: List[float] = [float(e) for e in eps]
        self.indices = indices
        if not stages:
            return
        final = {
            role: self.final_dims[role] or _head_width(model, self.num_classes, role)
            for role, model in (('student', student), ('teacher', teacher))
        }
        base_grid = None
        if 'grid' in student_shapes:
            shape = student_shapes['grid']
            base_grid = tuple(int(v) for v in shape[1]) if isinstance(shape, list) else None
        for shape, index in zip(stages, indices):
            shape = tuple(shape[0] if isinstance(shape, list) else shape)
            cfg = dict(
                self.branch_cfg,
                in_shape=shape,
                stage=index,
                num_classes=self.num_classes,
                num_stages=self.num_stages)
            if len(shape) == 3:
                cfg['out_dims'] = max(final['student'], final['teacher'])
            else:
                cfg.update(
                    out_dims=final['student'],
                    num_extra=self.student_extra,
                    grid=self._grid(shape[0] - self.student_extra, base_grid))
            self.branches.append(build_module(cfg))

    @staticmethod
    def _grid(n: int, base_grid):
        if base_grid is not None:
            grid = downsampled_grid(base_grid, n)
            if grid[0] * grid[1] == n:
                return grid
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f'OFALoss: {n} patch tokens do not form a square grid; tap the patch '
                             f"grid as student_taps grid='backbone.patch_embed'.")
        return side, side

    def _targets(self, data_samples, logits):
        hard, soft = class_targets(data_samples, logits.shape[1], device=logits.device)
        if soft is not None and self.soft_label == 'mix':
            return soft.to(logits.dtype)
        return F.one_hot(hard, logits.shape[1]).to(logits.dtype)

    def forward(self, student_feats, teacher_feats, data_samples=None, progress=None):
        z_s = as_logits(student_feats['logits'])
        z_t = as_logits(teacher_feats['logits'])
        target = self._targets(data_samples, z_s)
        terms = {}
        if self.branches:
            feats = self.as_list(student_feats, 'student', 'stages')
            for branch, feat, index, eps in zip(self.branches, feats, self.indices, self.eps_list):
                feat = feat[0] if isinstance(feat, (list, tuple)) else feat
                loss = ofa_loss(branch(feat), z_t, target, eps, self.temperature)
                terms[self.term(f'stage{index}')] = self.loss_weight * loss
        terms[self.term('head')] = self.head_weight * ofa_loss(z_s, z_t, target, self.eps_list[-1],
                                                               self.temperature)
        return terms
