"""MGD (Yang et al., ECCV 2022): masked generative distillation of feature maps."""
from typing import Optional

import torch

from mmkd_ext.registry import MODELS, build_module
from mmkd_ext.utils.tokens import feature_dims, feature_map, grid_of
from .base import DistillLoss


@MODELS.register_module()
class MGDLoss(DistillLoss):
    """``alpha_mgd * sum_{c,h,w} (G(M * align(F^S)) - F^T)^2 / B`` over the whole map.

    align: :class:`LinearProjector` (a 1x1 convolution on maps; identity when the widths match).
    M: a random 0/1 mask drawn anew at every call, the zeros replacing features (no mask token),
    with one of two layouts, as in MGD's two reference implementations:

    - ``mask='channel'`` (MGD's classification code, and cls_KD's): M has shape (B, C_t, 1, 1):
      per sample, each whole channel of the aligned student map is zeroed when ``u < lambda_mgd``
      (u ~ U[0, 1) drawn per sample and channel), kept otherwise.
    - ``mask='spatial'`` (MGD's detection and segmentation code, MMRazor): M has shape
      (B, 1, h, w): per sample, each position (all channels) is zeroed when ``u > 1 - lambda_mgd``.

    Either way each entry is masked with probability ``lambda_mgd``, independently (a Bernoulli
    draw, not a fixed count). G: :class:`MaskedGenerativeBlock` (Conv3x3 -> ReLU -> Conv3x3).
    Unlike ViTKD the loss covers every position and channel, masked or not.

    Feature maps (B, C, h, w) are used as they are. ViT tokens (B, E+N, D) lose their extra tokens
    and are laid on the patch grid, which the ``grid`` student tap gives (``backbone.patch_embed``);
    this is how the ViTKD paper's MGD baseline on DeiT is run.

    Taps: student ``feat`` and optional ``grid`` (None by default), teacher ``feat``. Defaults
    read ``backbone.layer4`` (ResNet's last stage).

    Args:
        alpha_mgd (float): weight of the summed squared error. 7e-5 for classification in MGD;
            2e-5 for detection. Defaults to 7e-5.
        lambda_mgd (float): masked fraction in [0, 1). 0.15 in MGD's and cls_KD's classification
            code; 0.65 in MGD's detection configs and MMRazor. Defaults to 0.15.
        mask (str): 'channel' (classification, MGD's cls code) or 'spatial' (MGD's detection
            code). Defaults to 'channel'.
        generator (dict, optional): config of the generative block (channels filled at set-up).
            Defaults to the Conv3x3-ReLU-Conv3x3 block.
        projector (dict, optional): config of the alignment (dims filled at set-up). Defaults to
            :class:`LinearProjector`.

    Returns (forward): ``{'loss_mgd': scalar}``.
    """
    default_student_taps = dict(feat='backbone.layer4', grid=None)
    default_teacher_taps = dict(feat='backbone.layer4')
    default_name = 'mgd'
    MASKS = ('channel', 'spatial')

    def __init__(self,
                 alpha_mgd: float = 7e-5,
                 lambda_mgd: float = 0.15,
                 mask: str = 'channel',
                 generator: Optional[dict] = None,
                 projector: Optional[dict] = None,
                 **kwargs):
        super().__init__(**kwargs)
        if mask not in self.MASKS:
            raise ValueError(f"MGDLoss: mask must be 'channel' (classification, MGD's cls code) "
                             f"or 'spatial' (MGD's detection code), got {mask!r}.")
        if not 0 <= lambda_mgd < 1:
            raise ValueError(f'MGDLoss: lambda_mgd is the masked fraction, in [0, 1); got '
                             f'{lambda_mgd!r}.')
        self.alpha_mgd, self.lambda_mgd, self.mask = alpha_mgd, lambda_mgd, mask
        self.generator_cfg = generator or dict(type='MaskedGenerativeBlock', variant='conv')
        self.projector_cfg = projector or dict(type='LinearProjector')

    def setup(self, student_shapes, teacher_shapes, student, teacher):
        super().setup(student_shapes, teacher_shapes, student, teacher)
        d_s, d_t = feature_dims(student_shapes['feat']), feature_dims(teacher_shapes['feat'])
        self.align = build_module(self.projector_cfg, in_dims=d_s, out_dims=d_t)
        self.generation = build_module(self.generator_cfg, channels=d_t)

    def random_mask(self, shape, device=None) -> torch.Tensor:
        """The keep-mask for an aligned map of ``shape`` (B, C, h, w): 1 = kept, 0 = masked.

        (B, C, 1, 1) for ``mask='channel'``, (B, 1, h, w) for ``'spatial'`` (tests replace this
        method to fix the mask).
        """
        b, c, h, w = shape
        if self.mask == 'channel':
            return (torch.rand(b, c, 1, 1, device=device) >= self.lambda_mgd).float()
        return (torch.rand(b, 1, h, w, device=device) <= 1 - self.lambda_mgd).float()

    def forward(self, student_feats, teacher_feats, data_samples=None, progress=None):
        grid = grid_of(student_feats['grid']) if 'grid' in student_feats else None
        s = self.align(feature_map(student_feats['feat'], self.student_extra, grid))
        t = feature_map(teacher_feats['feat'], self.teacher_extra, grid).detach()
        if s.shape != t.shape:
            raise ValueError(f'MGDLoss: aligned student map {tuple(s.shape)} vs teacher map '
                             f'{tuple(t.shape)}.')
        keep = self.random_mask(s.shape, s.device).to(s.dtype)
        # The attention variants of the generator take the masked positions; a channel mask has
        # none (every position keeps some channels).
        positions = (keep.flatten(1) == 0) if self.mask == 'spatial' else None
        pred = self.generation(s * keep, positions)
        loss = (pred - t).pow(2).sum() / s.shape[0]
        return {self.term(): self.loss_weight * self.alpha_mgd * loss}
