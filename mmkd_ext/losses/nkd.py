"""NKD (Yang et al., ICCV 2023): normalized KD, a target term and a renormalised non-target term."""
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
    ``loss_weight``; the student's own task loss is kept at weight 1 (cls_KD).

    Soft labels (Mixup/CutMix, ``gt_score``), ``soft_labels``:

    - ``'argmax'`` (the reference code, cls_KD ``nkd.py``): y = argmax of the mixed label in both
      terms, exactly the formulas above; the other image's class is treated as a non-target class.
    - ``'weighted'`` (ours): the target term becomes ``-mean_b sum_c y_c p_t,c log p_s,c`` (every
      class in the mix counts, by its share; the formula above for a one-hot y); the non-target term
      still removes argmax y.

    Both are the same for hard labels. Configs that reproduce published numbers use ``'argmax'``.

    Args:
        tau (float): temperature T of the non-target term. Defaults to 1.0.
        gamma (float): weight of the non-target term (1.0 for DeiT students, 1.5 for
            ResNet/MobileNet). Defaults to 1.0.
        soft_labels (str): 'argmax' or 'weighted', see above. Defaults to 'argmax'.

    Taps: ``logits`` (B, C) on both sides, default ``head``.
    """
    default_student_taps = dict(logits='head')
    default_teacher_taps = dict(logits='head')
    default_name = 'nkd'
    SOFT_LABELS = ('argmax', 'weighted')

    def __init__(self, tau: float = 1.0, gamma: float = 1.0, soft_labels: str = 'argmax', **kwargs):
        super().__init__(**kwargs)
        if soft_labels not in self.SOFT_LABELS:
            raise ValueError(f"NKDLoss: soft_labels must be 'argmax' (the reference: argmax of a "
                             f"mixed label in both terms) or 'weighted' (target term weighted by "
                             f"the mixed label), got {soft_labels!r}.")
        self.tau = tau
        self.gamma = gamma
        self.soft_labels = soft_labels

    def forward(self, student_feats, teacher_feats, data_samples=None, progress=None):
        z_s = as_logits(student_feats['logits'])
        z_t = as_logits(teacher_feats['logits']).detach()
        hard, soft = class_targets(data_samples, z_s.size(1), z_s.device)

        log_p_s = F.log_softmax(z_s, dim=1)
        p_t = F.softmax(z_t, dim=1)
        if soft is not None and self.soft_labels == 'weighted':
            target = -(soft * p_t * log_p_s).sum(dim=1).mean()
        else:
            idx = hard.view(-1, 1)
            target = -(p_t.gather(1, idx) * log_p_s.gather(1, idx)).mean()

        log_q_s = F.log_softmax(drop_target_column(z_s, hard) / self.tau, dim=1)
        q_t = F.softmax(drop_target_column(z_t, hard) / self.tau, dim=1)
        non_target = -self.gamma * self.tau**2 * (q_t * log_q_s).sum(dim=1).mean()
        return {
            self.term('target'): self.loss_weight * target,
            self.term('non_target'): self.loss_weight * non_target,
        }
