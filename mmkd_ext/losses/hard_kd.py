"""DeiT-style hard distillation: cross-entropy against the teacher's top-1 class."""
import torch.nn.functional as F

from mmkd_ext.registry import MODELS
from mmkd_ext.utils.targets import as_logits
from .base import DistillLoss


@MODELS.register_module()
class HardKDLoss(DistillLoss):
    """``loss_weight * CE(z_s, argmax z_t)`` (Touvron et al., DeiT, 2021), batch mean.

    As in the ViTKD paper's hard-KD baseline it is applied to the class-token logits by default (no
    distillation token). Labels are not used: under Mixup/CutMix the teacher's top-1 on the mixed
    image is the target.

    Taps: ``logits`` on both sides (B x C), default ``head``. Logged as ``loss_hard_kd``.
    """
    default_student_taps = dict(logits='head')
    default_teacher_taps = dict(logits='head')
    default_name = 'hard_kd'

    def forward(self, student_feats, teacher_feats, data_samples=None, progress=None):
        target = as_logits(teacher_feats['logits']).detach().argmax(dim=1)
        loss = F.cross_entropy(as_logits(student_feats['logits']), target)
        return {self.term(): self.loss_weight * loss}


@MODELS.register_module()
class DeiTDistillationLoss(HardKDLoss):
    """DeiT's hard-label distillation through the distillation token (Touvron et al., 2021).

    ``loss_weight * CE(z_dist, argmax z_t)``: the teacher's top-1 class on the student's
    *distillation head* (``head.layers.head_dist`` of a DeiT head, on the distillation token). The
    class head keeps the true label through the student's own loss, which
    :class:`mmkd_ext.TrainableDeiTClsHead` computes on the class token only. DeiT's objective
    ``0.5 * CE(z_cls, y) + 0.5 * CE(z_dist, argmax z_t)`` is therefore ``student_loss_weight=0.5``
    and ``loss_weight=0.5``.

    mmpretrain's own ``DeiTClsHead`` applies the label to the average of both heads (and warns
    that it cannot train): a student with it is refused at set-up.

    Taps: student ``logits`` default ``head.layers.head_dist`` (B x C); teacher ``logits`` default
    ``head``. Logged as ``loss_deit_distill``.
    """
    default_student_taps = dict(logits='head.layers.head_dist')
    default_teacher_taps = dict(logits='head')
    default_name = 'deit_distill'

    def setup(self, student_shapes, teacher_shapes, student, teacher):
        super().setup(student_shapes, teacher_shapes, student, teacher)
        head = getattr(student, 'head', None)
        if head is not None and type(head).__name__ == 'DeiTClsHead':
            raise TypeError(
                "DeiTDistillationLoss: the student's head is mmpretrain's DeiTClsHead, whose loss "
                "puts the label on the average of the class and distillation heads. Use "
                "head=dict(type='mmkd_ext.TrainableDeiTClsHead', ...) (same arguments): it trains "
                "the class head on the label and leaves the distillation head to this loss.")
