"""DKD (Zhao et al., CVPR 2022): decoupled KD, target-class KD + non-target-class KD."""
import torch
import torch.nn.functional as F

from mmkd_ext.registry import MODELS
from mmkd_ext.utils.targets import as_logits, class_targets, drop_target_column
from .base import DistillLoss


@MODELS.register_module()
class DKDLoss(DistillLoss):
    """``alpha * TCKD + beta * NCKD``, both T^2-scaled KL divergences, batch mean.

    - TCKD: KL between the binary distributions (p[y], 1 - p[y]) of teacher and student at T;
    - NCKD: KL between the distributions over the non-target classes (target column removed,
      re-normalised at T).
    Log-probabilities come from log-sum-exp, never from log(p) (the reference takes log of the
    binary probabilities; the values are the same where both are finite).

    Soft labels (Mixup/CutMix): the reference code (mdistiller, and cls_KD's copy) takes integer
    labels only and cannot run on a mixed label. Ours takes the dominant class, argmax of the mixed
    label, as the target: our extension, not the reference's behaviour.

    Warm-up as mdistiller: the whole loss is scaled by ``min(epoch / warmup_epochs, 1)`` with epochs
    counted from 1, i.e. ``min((progress.epoch + 1) / warmup_epochs, 1)`` with the ``progress``
    the distiller passes (factor 1 without it, e.g. outside training). mdistiller's ImageNet
    configs set WARMUP 1, which makes the factor 1 from the first epoch (no ramp); its CIFAR-100
    setting is 20 epochs.

    The defaults are mdistiller's ImageNet setting for ResNet-34 -> ResNet-18 (alpha 1, beta 0.5,
    T 1, warm-up 1; ResNet-50 -> MobileNet-V1 uses beta 2). beta 8, T 4 and a 20-epoch warm-up are
    its CIFAR-100 setting (and mdistiller's code defaults). cls_KD's DeiT configs use alpha 1,
    beta 0.5, T 1 and no warm-up.

    Args:
        alpha (float): TCKD weight. Defaults to 1.0.
        beta (float): NCKD weight. Defaults to 0.5.
        tau (float): temperature T. Defaults to 1.0.
        warmup_epochs (int): epochs of linear warm-up of the weight, counted from 1 (0 or 1: no
            ramp). Defaults to 1.

    Taps: ``logits`` (B, C) on both sides, default ``head``. Logged as ``loss_dkd_tckd`` and
    ``loss_dkd_nckd``.
    """
    default_student_taps = dict(logits='head')
    default_teacher_taps = dict(logits='head')
    default_name = 'dkd'

    def __init__(self,
                 alpha: float = 1.0,
                 beta: float = 0.5,
                 tau: float = 1.0,
                 warmup_epochs: int = 1,
                 **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.beta, self.tau = alpha, beta, tau
        self.warmup_epochs = warmup_epochs

    def warmup_factor(self, progress=None) -> float:
        """``min((epoch + 1) / warmup_epochs, 1)`` (epoch: completed epochs); 1 without progress.
        """
        if self.warmup_epochs <= 0 or progress is None:
            return 1.0
        return min((progress.epoch + 1) / self.warmup_epochs, 1.0)

    def forward(self, student_feats, teacher_feats, data_samples=None, progress=None):
        z_s = as_logits(student_feats['logits']) / self.tau
        z_t = as_logits(teacher_feats['logits']).detach() / self.tau
        target, _ = class_targets(data_samples, z_s.size(1), z_s.device)

        def binary_log_probs(z):
            # log p[y] and log(1 - p[y]) = logsumexp over non-target - logsumexp over all.
            lse = torch.logsumexp(z, dim=1)
            log_p = z.gather(1, target.view(-1, 1)).squeeze(1) - lse
            log_rest = torch.logsumexp(drop_target_column(z, target), dim=1) - lse
            return torch.stack([log_p, log_rest], dim=1)

        tckd = F.kl_div(
            binary_log_probs(z_s), binary_log_probs(z_t), reduction='batchmean',
            log_target=True) * self.tau**2
        nckd = F.kl_div(
            F.log_softmax(drop_target_column(z_s, target), dim=1),
            F.log_softmax(drop_target_column(z_t, target), dim=1),
            reduction='batchmean',
            log_target=True) * self.tau**2
        w = self.loss_weight * self.warmup_factor(progress)
        return {self.term('tckd'): w * self.alpha * tckd, self.term('nckd'): w * self.beta * nckd}
