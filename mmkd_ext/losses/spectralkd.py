"""SpectralKD (Tian et al., arXiv 2412.19055): align student and teacher features in the 2-D Fourier
domain, on the layers a spectral analysis marks as information-dense
(``tools/analysis/spectral_analysis.py`` proposes them).

For every tapped pair F_s (B, Cs, H, W), F_t (B, Ct, H, W):

1. if Ct > Cs, the teacher is average-pooled over groups of adjacent channels down to Cs;
2. S = rfft2(F_s, norm='ortho'), T = rfft2(F_t, norm='ortho') over (H, W);
3. the term is the mean squared error over the stacked real and imaginary parts of S - T;

and the loss is ``loss_weight`` times the mean of the terms over the pairs. No parameters, no
feature normalisation. Because the ortho FFT is unitary, each term is about half the spatial MSE
with
the zero-frequency column (and, for even W, the Nyquist column) counted twice: the half spectrum
that rfft2 keeps holds every other column once (see docs/methods/spectralkd.md).
"""
import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from mmkd_ext.registry import MODELS
from mmkd_ext.utils.tokens import downsampled_grid, feature_map, split_tap
from .base import DistillLoss

Grid = Tuple[int, int]


def pool_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Average adjacent channels: (B, C, H, W) -> (B, channels, H, W), channels <= C.

    When C is a multiple of ``channels`` this is the mean over groups of C // channels adjacent
    channels; otherwise adaptive average pooling (groups of nearly equal size, possibly overlapping
    by one channel).
    """
    b, c, h, w = x.shape
    if c == channels:
        return x
    if c % channels == 0:
        return x.reshape(b, channels, c // channels, h, w).mean(dim=2)
    flat = x.permute(0, 2, 3, 1).reshape(b * h * w, 1, c)
    return F.adaptive_avg_pool1d(flat, channels).reshape(b, h, w, channels).permute(0, 3, 1, 2)


def spectral_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE between the ortho 2-D real FFTs of two maps, real and imaginary parts stacked.

    Args:
        student, teacher: (B, C, H, W) of equal shape.
    Returns:
        a scalar.
    """
    # float32: half-precision FFTs are restricted to power-of-two sizes on GPUs (7x7, 14x14 are
    # not).
    s = torch.fft.rfft2(student.float(), norm='ortho')
    t = torch.fft.rfft2(teacher.float(), norm='ortho')
    return F.mse_loss(torch.view_as_real(s), torch.view_as_real(t))


def _positions_and_channels(shape, num_extra: int) -> Tuple[int, int, Optional[Grid]]:
    """From a tap shape (batch removed): (number of spatial positions, channels, grid or None)."""
    if isinstance(shape, list):  # (tokens, (h, w)): the grid's values are only known at run time
        (n, c) = shape[0]
        return n, c, None
    if len(shape) == 3:
        c, h, w = shape
        return h * w, c, (h, w)
    if len(shape) == 2:
        n, c = shape
        return n - num_extra, c, None
    raise ValueError(
        f'SpectralKD reads maps (C, H, W) or tokens (N, C), got a tap of shape {shape}')


@MODELS.register_module()
class SpectralKDLoss(DistillLoss):
    """SpectralKD's frequency-domain feature alignment (see the module docstring for the formula).

    Taps (both sides, no defaults: layer choice depends on the pair):

    - ``feats``: a list of module paths, paired in order between student and teacher, e.g. student
      ``backbone.layers.{0,1,6..11}`` with teacher ``backbone.layers.{0,1,18..23}`` (DeiT <- CaiT),
      or ``backbone.stages.{0..3}`` on both (Swin). Block outputs are used before any final norm.
    - ``grid`` (optional): a module returning ``(tokens, (h, w))``, normally
    ``backbone.patch_embed``,
      giving the run-time patch grid of token features that carry none (ViT/DeiT/CaiT blocks).
      Without it the backbone's ``patch_resolution`` is used, and inputs must keep the size of the
      dry run. Plain tokens with fewer positions than the patch grid (Swin blocks after patch
      merging) are laid on the grid reduced by the matching power of two.

    Extra tokens (cls, distillation) are dropped using the backbone's ``num_extra_tokens``.

    Args:
        resample: ``None`` (default): student and teacher grids must be equal and the student may
        not
            be wider than its teacher, otherwise a ValueError at construction. ``'area'``: opt-in
            for
            heterogeneous pairs: the larger grid is reduced to the smaller by area (adaptive
            average) pooling on each axis, and the wider side, student or teacher, is average-pooled
            over adjacent channels to the narrower. Nothing is upsampled and nothing is learned.
        loss_weight: w of the paper (0.2 for DeiT students, 0.05 for Swin).

    Returns ``{'loss_spectralkd': loss_weight * mean over pairs of spectral_mse}``.
    """
    default_student_taps = dict(feats=(), grid=None)
    default_teacher_taps = dict(feats=(), grid=None)
    default_name = 'spectralkd'
    RESAMPLE_MODES = (None, 'area')

    def __init__(self, resample: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        if resample not in self.RESAMPLE_MODES:
            raise ValueError(f'SpectralKDLoss: resample must be one of {self.RESAMPLE_MODES}, got '
                             f'{resample!r}.')
        self.resample = resample
        for role, taps in (('student', self.student_taps), ('teacher', self.teacher_taps)):
            if isinstance(taps['feats'], str):
                taps['feats'] = [taps['feats']]
            if not taps['feats']:
                raise ValueError(
                    f'SpectralKDLoss needs {role}_taps=dict(feats=[module paths]); '
                    f'`python tools/analysis/spectral_analysis.py CONFIG` proposes them.')
            if not isinstance(taps.get('grid', ''), str):
                raise TypeError(f'SpectralKDLoss: {role} grid tap must be one module path.')
        ns, nt = len(self.student_taps['feats']), len(self.teacher_taps['feats'])
        if ns != nt:
            raise ValueError(f'SpectralKDLoss pairs student and teacher feats in order: got {ns} '
                             f'student and {nt} teacher paths.')
        self._fallback_grid: dict = {}

    def setup(self, student_shapes, teacher_shapes, student, teacher):
        super().setup(student_shapes, teacher_shapes, student, teacher)
        spaces = {}
        for role, shapes, model in (('student', student_shapes, student),
                                    ('teacher', teacher_shapes, teacher)):
            taps = getattr(self, f'{role}_taps')
            extra = getattr(self, f'{role}_extra')
            spaces[role] = [_positions_and_channels(s, extra) for s in shapes['feats']]
            tokens_without_grid = [
                p for p, s in zip(taps['feats'], shapes['feats'])
                if not isinstance(s, list) and len(s) == 2
            ]
            if tokens_without_grid and 'grid' not in taps:
                backbone = getattr(model, 'backbone', model)
                grid = getattr(backbone, 'patch_resolution', None)
                counts = [spaces[role][taps['feats'].index(p)][0] for p in tokens_without_grid]
                if grid is None or any(math.prod(downsampled_grid(grid, n)) != n for n in counts):
                    raise ValueError(
                        f'SpectralKDLoss: the {role} taps {tokens_without_grid} are tokens without '
                        f"a grid; set {role}_taps grid='backbone.patch_embed' (a module that "
                        f'returns (tokens, (h, w))).')
                self._fallback_grid[role] = tuple(grid)
        problems = []
        for i, ((ps, cs, gs), (pt, ct, gt)) in enumerate(zip(spaces['student'], spaces['teacher'])):
            where = (
                f"pair {i} (student {self.student_taps['feats'][i]} {student_shapes['feats'][i]}"
                f", teacher {self.teacher_taps['feats'][i]} {teacher_shapes['feats'][i]})")
            if ps != pt or (gs and gt and gs != gt):
                problems.append(f'{where}: spatial grids differ ({ps} vs {pt} positions)')
            if cs > ct:
                problems.append(f'{where}: student wider than teacher ({cs} > {ct} channels)')
        if problems and self.resample is None:
            raise ValueError(
                'SpectralKDLoss compares equal grids, teacher at least as wide as the student:\n  '
                + '\n  '.join(problems) + "\nPick other layers, or set resample='area' "
                '(area pooling of the larger grid and the wider channels; see the docstring).')

    def _maps(self, feats: dict, role: str) -> List[torch.Tensor]:
        grid = self._fallback_grid.get(role)
        if 'grid' in feats:
            grid = split_tap(feats['grid'])[1]
        extra = getattr(self, f'{role}_extra')
        return [feature_map(v, extra, grid) for v in feats['feats']]

    def align(self, fs: torch.Tensor, ft: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Bring a pair of maps (B, Cs, Hs, Ws), (B, Ct, Ht, Wt) to one shape (B, C, H, W)."""
        if fs.shape[-2:] != ft.shape[-2:]:
            if self.resample is None:
                raise ValueError(f'SpectralKDLoss: grids differ at run time, student '
                                 f"{tuple(fs.shape[-2:])} vs teacher {tuple(ft.shape[-2:])}; set "
                                 f"resample='area' to pool the larger one.")
            size = (min(fs.shape[-2], ft.shape[-2]), min(fs.shape[-1], ft.shape[-1]))
            fs, ft = F.adaptive_avg_pool2d(fs, size), F.adaptive_avg_pool2d(ft, size)
        cs, ct = fs.shape[1], ft.shape[1]
        if ct > cs:
            ft = pool_channels(ft, cs)
        elif cs > ct:
            if self.resample is None:
                raise ValueError(f'SpectralKDLoss: student wider than teacher ({cs} > {ct}).')
            fs = pool_channels(fs, ct)
        return fs, ft

    def forward(self, student_feats, teacher_feats, data_samples=None, progress=None):
        terms = []
        for fs, ft in zip(
                self._maps(student_feats, 'student'), self._maps(teacher_feats, 'teacher')):
            fs, ft = self.align(fs, ft.detach())
            terms.append(spectral_mse(fs, ft))
        return {self.term(): self.loss_weight * torch.stack(terms).mean()}
