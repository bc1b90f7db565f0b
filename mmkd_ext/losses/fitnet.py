"""FitNet (Romero et al., ICLR 2015): regress the teacher's features from projected student ones."""
from typing import Optional

import torch.nn as nn

from mmkd_ext.registry import MODELS, build_module
from mmkd_ext.utils.tokens import as_tokens, feature_dims, split_tap
from .base import DistillLoss


@MODELS.register_module()
class FitNetLoss(DistillLoss):
    """``loss_weight * sum_layers reduce((proj(F^S) - F^T)^2)`` over chosen tap pairs.

    Works on tokens (B, E+N, D): the extra tokens are dropped by default (``patch_tokens_only``) so
    students and teachers with different extra tokens (DeiT's distillation token) compare; and on
    maps (B, C, h, w), compared as maps. One projector per pair (:class:`LinearProjector` by
    default: Linear over channels, 1x1 conv on maps; identity when the widths match).

    Taps: ``feats`` on both sides, one path or a list of paths of equal length (default the
    ViT's final LayerNorm ``backbone.ln1``, i.e. the last layer).

    Args:
        reduction: 'mean' (MSE over all elements, per layer) or 'sum' (sum over tokens and
            channels / batch size, as ViTKD's mimicking term: with it, ViTKD's alpha = 3e-5 is the
            same per-element weight).
        patch_tokens_only: drop cls/distillation tokens before comparing.
        projector: config of the projectors (dims filled at set-up).
    """
    default_student_taps = dict(feats='backbone.ln1')
    default_teacher_taps = dict(feats='backbone.ln1')
    default_name = 'fitnet'

    def __init__(self,
                 reduction: str = 'mean',
                 patch_tokens_only: bool = True,
                 projector: Optional[dict] = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.reduction = self.check_reduction(reduction)
        self.patch_tokens_only = patch_tokens_only
        self.projector_cfg = projector or dict(type='LinearProjector')

    def setup(self, student_shapes, teacher_shapes, student, teacher):
        super().setup(student_shapes, teacher_shapes, student, teacher)
        if not self.patch_tokens_only:
            self.student_extra = self.teacher_extra = 0
        s = self.as_list(student_shapes, 'student', 'feats')
        t = self.as_list(teacher_shapes, 'teacher', 'feats')
        if len(s) != len(t):
            raise ValueError(f'FitNetLoss: {len(s)} student taps but {len(t)} teacher taps.')
        projectors = []
        for s_shape, t_shape in zip(s, t):
            projectors.append(
                build_module(
                    self.projector_cfg,
                    in_dims=feature_dims(s_shape),
                    out_dims=feature_dims(t_shape)))
        self.projectors = nn.ModuleList(projectors)

    def _feature(self, value, extra):
        feats, _ = split_tap(value)
        return feats if feats.dim() == 4 else as_tokens(value, extra)

    def forward(self, student_feats, teacher_feats, data_samples=None, progress=None):
        s = self.as_list(student_feats, 'student', 'feats')
        t = self.as_list(teacher_feats, 'teacher', 'feats')
        total = 0.0
        for proj, s_val, t_val in zip(self.projectors, s, t):
            pred = proj(self._feature(s_val, self.student_extra))
            target = self._feature(t_val, self.teacher_extra).detach()
            if pred.shape != target.shape:
                raise ValueError(f'FitNetLoss: projected student feature {tuple(pred.shape)} vs '
                                 f'teacher feature {tuple(target.shape)}.')
            sq = (pred - target).pow(2)
            total = total + self.reduce(sq, self.reduction)
        return {self.term(): self.loss_weight * total}
