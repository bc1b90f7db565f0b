"""KD (Hinton et al., 2015): KL divergence between temperature-softened class distributions."""
import torch

from mmkd_ext.registry import MODELS
from mmkd_ext.utils.targets import as_logits
from .base import DistillLoss, kl_div_with_temperature


@MODELS.register_module()
class KDLoss(DistillLoss):
    """``loss_weight * T^2 * KL(p_t || p_s)``, p = softmax(z / T). Labels are not used, so Mixup /
    CutMix need no special handling (teacher and student see the same mixed image).

    Taps: ``logits`` on both sides, default ``head`` (an mmpretrain classifier's class scores, B x
    C). Per-pixel class scores (B, C, H, W) (a segmentor's ``decode_head.conv_seg``) are
    distilled pixel by pixel: every pixel is a sample, so the loss is
    ``T^2 * sum_{b,h,w} KL(p_t(b,h,w) || p_s(b,h,w)) / (B * H * W)``, the KL summed over classes
    and averaged over all pixels, at the resolution of the tapped maps (mmseg's decode heads:
    1/4 of the input, before the upsampling to the label size). Both maps must have the same
    shape.

    Args:
        tau (float): the temperature T. Defaults to 1.0.
    """
    default_student_taps = dict(logits='head')
    default_teacher_taps = dict(logits='head')
    default_name = 'kd'

    def __init__(self, tau: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.tau = tau

    def setup(self, student_shapes, teacher_shapes, student, teacher):
        s, t = student_shapes['logits'], teacher_shapes['logits']
        # Per-pixel scores (C, H, W): checked here, as the base's class-width check reads (C,).
        if isinstance(s, tuple) and len(s) == 3 and s != t:
            raise ValueError(
                f'{type(self).__name__} ({self.name!r}) distils per-pixel class scores: the '
                f'student tap {self.student_taps["logits"]!r} gives (C, H, W) = {s}, the '
                f'teacher tap {self.teacher_taps["logits"]!r} {t}. Both need the same classes '
                f'and the same resolution (decode heads at the same output stride).')
        super().setup(student_shapes, teacher_shapes, student, teacher)

    def forward(self, student_feats, teacher_feats, data_samples=None, progress=None):
        s, t = student_feats['logits'], teacher_feats['logits']
        if torch.is_tensor(s) and s.dim() > 2:
            s, t = _pixels_as_samples(s, t)
        loss = kl_div_with_temperature(as_logits(s), as_logits(t), self.tau)
        return {self.term(): self.loss_weight * loss}


def _pixels_as_samples(s: torch.Tensor, t: torch.Tensor):
    """Per-pixel class scores (B, C, H, W) of student and teacher -> (B * H * W, C) each."""
    if not torch.is_tensor(t) or s.shape != t.shape:
        raise ValueError(f'KDLoss: per-pixel student scores {tuple(s.shape)} and teacher scores '
                         f'{tuple(getattr(t, "shape", ()))} must have the same shape.')
    return tuple(x.movedim(1, -1).reshape(-1, x.shape[1]) for x in (s, t))
