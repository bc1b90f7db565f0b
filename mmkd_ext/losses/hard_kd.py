"""DeiT-style hard distillation: cross-entropy against the teacher's top-1 class."""
import torch.nn.functional as F

from mmkd_ext.registry import MODELS
from mmkd_ext.utils.targets import as_logits
from .base import DistillLoss


@MODELS.register_module()
class HardKDLoss(DistillLoss):
    """``loss_weight * CE(z_s, argmax z_t)`` (Touvron et al., DeiT, 2021).

    As in the ViTKD paper it is applied to the class-token logits (no distillation token).
    Taps: ``logits`` on both sides (B x C), default ``head``.
    """
    default_student_taps = dict(logits='head')
    default_teacher_taps = dict(logits='head')
    default_name = 'hard_kd'

    def forward(self, student_feats, teacher_feats, data_samples=None, progress=None):
        target = as_logits(teacher_feats['logits']).detach().argmax(dim=1)
        loss = F.cross_entropy(as_logits(student_feats['logits']), target)
        return {self.term(): self.loss_weight * loss}
