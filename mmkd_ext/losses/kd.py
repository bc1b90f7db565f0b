"""KD (Hinton et al., 2015): KL divergence between temperature-softened class distributions."""
from mmkd_ext.registry import MODELS
from mmkd_ext.utils.targets import as_logits
from .base import DistillLoss, kl_div_with_temperature


@MODELS.register_module()
class KDLoss(DistillLoss):
    """``loss_weight * T^2 * KL(p_t || p_s)``, p = softmax(z / T). Labels are not used, so Mixup /
    CutMix need no special handling (teacher and student see the same mixed image).

    Taps: ``logits`` on both sides, default ``head`` (an mmpretrain classifier's class scores, B x
    C).

    Args:
        tau: the temperature T.
    """
    default_student_taps = dict(logits='head')
    default_teacher_taps = dict(logits='head')
    default_name = 'kd'

    def __init__(self, tau: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.tau = tau

    def forward(self, student_feats, teacher_feats, data_samples=None, progress=None):
        loss = kl_div_with_temperature(
            as_logits(student_feats['logits']), as_logits(teacher_feats['logits']), self.tau)
        return {self.term(): self.loss_weight * loss}
