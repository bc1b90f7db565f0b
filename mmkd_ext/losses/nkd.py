"""NKD (Yang et al., ICCV 2023): normalized KD, a target term and a re-normalised non-target term."""
import torch
import torch.nn.functional as F

from mmkd_ext.registry import MODELS
from mmkd_ext.utils.targets import as_logits, class_targets, drop_target_column
from .base import DistillLoss


@MODELS.register_module()
class NKDLoss(DistillLoss):
    """Normalized knowledge distillation.

    - target term: ``-mean_b( p_t[y] * log p_s[y] )`` with p = softmax(z) (T = 1, teacher detached);
    - non-target term: the target column is removed from both logit matrices (B x (C-1)), which are
      re-normalised at temperature T: ``-gamma * T^2 * mean_b sum_j q_t,j * log q_s,j``.

    Returned as two logged terms, ``loss_nkd_target`` and ``loss_nkd_non_target``, each times
    ``loss_weight``.

    Soft labels (Mixup/CutMix): the target term becomes ``-mean_b sum_c y_c p_t,c log p_s,c``, which is
    the formula above for a one-hot y; the non-target term removes the dominant class (argmax y).
    cls_KD takes argmax y for both terms.

    Args:
        tau: temperature T of the non-target term.
        gamma: weight of the non-target term (1.0 for DeiT students, 1.5 for ResNet/MobileNet).
    """
    default_student_taps = dict(logits='head')
    default_teacher_taps = dict(logits='head')
    default_name = 'nkd'

    def __init__(self, tau: float = 1.0, gamma: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.tau = tau
        self.gamma = gamma

    def forward(self, student_feats, teacher_feats, data_samples=None, progress=None):
        z_s = as_logits(student_feats['logits'])
        z_t = as_logits(teacher_feats['logits']).detach()
        hard, soft = class_targets(data_samples, z_s.size(1), z_s.device)
        y = soft if soft is not None else F.one_hot(hard, z_s.size(1)).to(z_s.dtype)

        log_p_s = F.log_softmax(z_s, dim=1)
        p_t = F.softmax(z_t, dim=1)
        target = -(y * p_t * log_p_s).sum(dim=1).mean()

        log_q_s = F.log_softmax(drop_target_column(z_s, hard) / self.tau, dim=1)
        q_t = F.softmax(drop_target_column(z_t, hard) / self.tau, dim=1)
        non_target = -self.gamma * self.tau**2 * (q_t * log_q_s).sum(dim=1).mean()
        return {
            self.term('target'): self.loss_weight * target,
            self.term('non_target'): self.loss_weight * non_target,
        }
