"""ViTKD (Yang et al., 2022): mimic shallow layers, generate the deep layer from a masked student.
"""
import math
from typing import List, Optional

import torch
import torch.nn as nn

from mmkd_ext.registry import MODELS, build_module
from mmkd_ext.utils.tokens import (as_tokens, feature_dims, grid_of, map_to_tokens, split_tap,
                                   tokens_to_map)
from .base import DistillLoss


def exact_random_mask(batch: int, num_tokens: int, ratio: float, device=None) -> torch.Tensor:
    """(B, N) bool, True = masked. Each sample keeps exactly ``int(N * (1 - ratio))`` tokens, chosen
    uniformly by a random shuffle (as the reference code), so the masked count never varies."""
    keep = int(num_tokens * (1 - ratio))
    ranks = torch.rand(batch, num_tokens, device=device).argsort(dim=1).argsort(dim=1)
    return ranks >= keep


def correlation(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, D) -> (B, N, N) token correlation F F^T / sqrt(D) (ViTKD Table 8)."""
    return tokens @ tokens.transpose(1, 2) / math.sqrt(tokens.shape[-1])


@MODELS.register_module()
class ViTKDLoss(DistillLoss):
    """ViTKD: ``alpha * L_mimic + beta * L_gen`` on patch tokens (extra tokens are never used).

    Mimicking (shallow, Eq. 1), for each shallow tap pair (default blocks 0 and 1):
    ``sum_{n, j} (F^T_nj - fc(F^S)_nj)^2``, fc = one :class:`LinearProjector` per layer
    (identity when the widths match). With ``mimic='correlation'`` (Table 8) the N x N
    correlation matrices ``F F^T / sqrt(D)`` of each side are compared instead, without a
    projector.

    Generation (deep, Eqs. 2-5), on the deep tap (default the final LayerNorm):
    student tokens (B, N, D_s) -> Linear -> (B, N, D_t); a random ``mask_ratio`` of the tokens of
    every sample (exactly N - int(N * (1 - ratio)) of them) is replaced by a learnable mask token;
    the tokens are laid on the (h, w) patch grid and a generative block (Conv3x3-ReLU-Conv3x3 by
    default, :class:`MaskedGenerativeBlock`) predicts the teacher's tokens; only masked tokens
    count.
    The mask is drawn inside the loss, once, so prediction and target use the same one.

    Reductions (the published alpha/beta assume ``'sum'``):

    - ``'sum'`` (reference): squared errors summed over tokens and channels (and over the shallow
      layers), divided by the batch size; the generation term is further divided by ``mask_ratio``.
    - ``'mean'``: the mean over all compared elements (and over the shallow layers); the generation
      term is the mean over masked elements. Equal to ``'sum'`` when
      alpha_mean = alpha_sum * L * N * D_t and beta_mean = beta_sum * M * D_t / ratio (L shallow
      layers, M = masked tokens per sample ~ ratio * N), see docs/methods/vitkd.md.

    With ``mask_ratio=0`` nothing is masked: the loss covers every token and is not divided by the
    ratio (the reference code would divide 0 by 0).

    Taps: student ``shallow`` (list), ``deep``, ``grid`` (a module giving the runtime patch grid:
    ``backbone.patch_embed`` returns (tokens, (h, w)); for Swin use the last stage,
    ``backbone.stages.3``); teacher ``shallow``, ``deep``. A term with weight 0 is not computed and
    its taps are dropped (the teacher then stops earlier, e.g. after block 1 for mimicking only).

    Args:
        alpha (float): weight of the mimicking term. Defaults to 3e-5 (the paper's).
        beta (float): weight of the generation term. Defaults to 3e-6 (the paper's).
        mask_ratio (float): lambda, the fraction of masked tokens, in [0, 1). Defaults to 0.5.
        reduction (str): 'sum' (reference) or 'mean'. Defaults to 'sum'.
        mimic (str): 'linear' (projector, the method) or 'correlation' (Table 8 ablation).
            Defaults to 'linear'.
        projector (dict, optional): config of the projectors (in/out dims filled at set-up).
            Defaults to :class:`LinearProjector`.
        generator (dict, optional): config of the generative block (channels filled at set-up);
            its ``variant`` gives the Table 7 ablations. Defaults to the conv block.

    Returns (forward): ``{'loss_vitkd_mimic': scalar, 'loss_vitkd_gen': scalar}`` (a term with
    weight 0 is absent).
    """
    default_student_taps = dict(
        shallow=['backbone.layers.0', 'backbone.layers.1'],
        deep='backbone.ln1',
        grid='backbone.patch_embed')
    default_teacher_taps = dict(
        shallow=['backbone.layers.0', 'backbone.layers.1'], deep='backbone.ln1')
    default_name = 'vitkd'

    def __init__(self,
                 alpha: float = 3e-5,
                 beta: float = 3e-6,
                 mask_ratio: float = 0.5,
                 reduction: str = 'sum',
                 mimic: str = 'linear',
                 projector: Optional[dict] = None,
                 generator: Optional[dict] = None,
                 **kwargs):
        super().__init__(**kwargs)
        if reduction not in ('sum', 'mean'):
            raise ValueError(f"ViTKDLoss reduction must be 'sum' or 'mean', got {reduction!r}.")
        if mimic not in ('linear', 'correlation'):
            raise ValueError(f"ViTKDLoss mimic must be 'linear' or 'correlation', got {mimic!r}.")
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f'mask_ratio must be in [0, 1), got {mask_ratio}.')
        if alpha == 0 and beta == 0:
            raise ValueError('ViTKDLoss with alpha = beta = 0 computes nothing.')
        self.alpha, self.beta, self.mask_ratio = alpha, beta, mask_ratio
        self.reduction, self.mimic = reduction, mimic
        self.projector_cfg = projector or dict(type='LinearProjector')
        self.generator_cfg = generator or dict(type='MaskedGenerativeBlock', variant='conv')
        self.check_reduction(reduction)
        # A zero-weight term reads nothing, so the teacher can stop earlier.
        self.drop_taps(*(['shallow'] if alpha == 0 else []) +
                       (['deep', 'grid'] if beta == 0 else []))

    # --------------------------------------------------------------------------- set-up
    def setup(self, student_shapes, teacher_shapes, student, teacher):
        super().setup(student_shapes, teacher_shapes, student, teacher)
        if self.alpha > 0:
            s_list = self.as_list(student_shapes, 'student', 'shallow')
            t_list = self.as_list(teacher_shapes, 'teacher', 'shallow')
            if len(s_list) != len(t_list):
                raise ValueError(f'ViTKDLoss: {len(s_list)} student shallow taps but '
                                 f'{len(t_list)} teacher shallow taps.')
            if self.mimic == 'linear':
                self.mimic_projectors = nn.ModuleList([
                    build_module(
                        self.projector_cfg, in_dims=feature_dims(s), out_dims=feature_dims(t))
                    for s, t in zip(s_list, t_list)
                ])
        if self.beta > 0:
            d_s = feature_dims(student_shapes['deep'])
            d_t = feature_dims(teacher_shapes['deep'])
            self.gen_projector = build_module(self.projector_cfg, in_dims=d_s, out_dims=d_t)
            # Initialised to zero as in the reference code.
            self.mask_token = nn.Parameter(torch.zeros(1, 1, d_t))
            self.generator = build_module(self.generator_cfg, channels=d_t)

    # --------------------------------------------------------------------------- pieces
    def random_mask(self, batch: int, num_tokens: int, device=None) -> torch.Tensor:
        """(B, N) bool, True = masked (tests replace this to fix the mask)."""
        return exact_random_mask(batch, num_tokens, self.mask_ratio, device)

    def mimic_loss(self, s_feats: List, t_feats: List) -> torch.Tensor:
        """Shallow taps (each (B, E+N, D) tokens or (tokens, grid)) -> the unweighted mimic loss."""
        terms = []
        for i, (s, t) in enumerate(zip(s_feats, t_feats)):
            fs = as_tokens(s, self.student_extra)
            ft = as_tokens(t, self.teacher_extra).detach()
            if fs.shape[1] != ft.shape[1]:
                raise ValueError(f'ViTKDLoss: shallow tap {i} has {fs.shape[1]} student patch '
                                 f'tokens and {ft.shape[1]} teacher ones.')
            if self.mimic == 'linear':
                pred, target = self.mimic_projectors[i](fs), ft
            else:
                pred, target = correlation(fs), correlation(ft)
            terms.append(self.reduce((pred - target).pow(2), self.reduction))
        total = torch.stack(terms).sum()
        return total if self.reduction == 'sum' else total / len(terms)

    def generation_loss(self, s_deep, t_deep, grid) -> torch.Tensor:
        """Deep taps + the (h, w) grid -> the unweighted generation loss (masked tokens only)."""
        fs = as_tokens(s_deep, self.student_extra, grid)
        ft = as_tokens(t_deep, self.teacher_extra, grid).detach()
        if fs.shape[1] != ft.shape[1]:
            raise ValueError(f'ViTKDLoss: the deep taps have {fs.shape[1]} student and '
                             f'{ft.shape[1]} teacher patch tokens.')
        x = self.gen_projector(fs)
        b, n, _ = x.shape
        mask = self.random_mask(b, n, x.device)
        x = torch.where(mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        pred = map_to_tokens(self.generator(tokens_to_map(x, grid), mask))
        sq = (pred - ft).pow(2)
        if self.mask_ratio == 0 or not mask.any():
            return self.reduce(sq, self.reduction)
        masked = sq * mask.unsqueeze(-1).to(sq.dtype)
        if self.reduction == 'sum':
            return masked.sum() / b / self.mask_ratio
        return masked.sum() / (mask.sum() * sq.shape[-1])

    def _grid(self, student_feats):
        if 'grid' in student_feats:
            return grid_of(student_feats['grid'])
        feats, grid = split_tap(student_feats['deep'])
        return grid if grid is not None else grid_of(feats)

    def forward(self, student_feats, teacher_feats, data_samples=None, progress=None):
        losses = {}
        if self.alpha > 0:
            s = self.as_list(student_feats, 'student', 'shallow')
            t = self.as_list(teacher_feats, 'teacher', 'shallow')
            losses[self.term('mimic')] = self.loss_weight * self.alpha * self.mimic_loss(s, t)
        if self.beta > 0:
            gen = self.generation_loss(student_feats['deep'], teacher_feats['deep'],
                                       self._grid(student_feats))
            losses[self.term('gen')] = self.loss_weight * self.beta * gen
        return losses
