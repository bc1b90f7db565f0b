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
    M: a random spatial mask, per sample, each position zeroed with probability ``lambda_mgd``
    (independent draws, as MGD's reference code; no mask token: masked positions are zeros).
    G: :class:`MaskedGenerativeBlock` (Conv3x3 -> ReLU -> Conv3x3). Unlike ViTKD the loss covers
    every position, masked or not.

    Feature maps (B, C, h, w) are used as they are. ViT tokens (B, E+N, D) lose their extra tokens
    and are laid on the patch grid, which the ``grid`` student tap gives (``backbone.patch_embed``);
    this is how the ViTKD paper's MGD baseline on DeiT is run.

    Taps: student ``feat`` and optional ``grid`` (None by default), teacher ``feat``. Defaults
    read ``backbone.layer4`` (ResNet's last stage).

    Args:
        alpha_mgd: weight (7e-5 for classification in MGD; 2e-5 for detection).
        lambda_mgd: masked fraction (0.15 in cls_KD's classification config; 0.65 in MGD's
            detection configs and MMRazor).
        generator: config of the generative block (channels filled at set-up).
        projector: config of the alignment (dims filled at set-up).
    """
    default_student_taps = dict(feat='backbone.layer4', grid=None)
    default_teacher_taps = dict(feat='backbone.layer4')
    default_name = 'mgd'

    def __init__(self, alpha_mgd: float = 7e-5, lambda_mgd: float = 0.15,
                 generator: Optional[dict] = None, projector: Optional[dict] = None, **kwargs):
        super().__init__(**kwargs)
        self.alpha_mgd, self.lambda_mgd = alpha_mgd, lambda_mgd
        self.generator_cfg = generator or dict(type='MaskedGenerativeBlock', variant='conv')
        self.projector_cfg = projector or dict(type='LinearProjector')

    def setup(self, student_shapes, teacher_shapes, student, teacher):
        super().setup(student_shapes, teacher_shapes, student, teacher)
        d_s, d_t = feature_dims(student_shapes['feat']), feature_dims(teacher_shapes['feat'])
        self.align = build_module(self.projector_cfg, in_dims=d_s, out_dims=d_t)
        self.generation = build_module(self.generator_cfg, channels=d_t)

    def random_mask(self, batch: int, height: int, width: int, device=None) -> torch.Tensor:
        """(B, 1, h, w) float, 0 where masked (tests replace this to fix the mask)."""
        return (torch.rand(batch, 1, height, width, device=device) <= 1 - self.lambda_mgd).float()

    def forward(self, student_feats, teacher_feats, data_samples=None, progress=None):
        grid = grid_of(student_feats['grid']) if 'grid' in student_feats else None
        s = self.align(feature_map(student_feats['feat'], self.student_extra, grid))
        t = feature_map(teacher_feats['feat'], self.teacher_extra, grid).detach()
        if s.shape != t.shape:
            raise ValueError(f'MGDLoss: aligned student map {tuple(s.shape)} vs teacher map '
                             f'{tuple(t.shape)}.')
        b, _, h, w = s.shape
        keep = self.random_mask(b, h, w, s.device).to(s.dtype)
        mask = (keep.flatten(1) == 0)  # (B, h*w) True = masked, for attention variants
        pred = self.generation(s * keep, mask)
        loss = (pred - t).pow(2).sum() / b
        return {self.term(): self.loss_weight * self.alpha_mgd * loss}
