"""Spectral layer analysis (SpectralKD): where in its depth does a model keep its information?

Definitions (ours: the paper's normalisation, its Eq. 5, is not reproduced; these are faithful in
spirit and documented in docs/methods/spectralkd.md). For a layer output laid out as a map
X (B, C, H, W) (token layers: extra tokens dropped, tokens laid on their patch grid by
:func:`mmkd_ext.utils.tokens.feature_map`):

* **spectral intensity**: mean over b, c, u, v of |rfft2_{H,W}(X)| with the unitary ('ortho')
  normalisation, a scalar per layer;
* **channel spectrum**: mean over b, h, w of |rfft_C(X)| ('ortho'), a vector of C // 2 + 1 values
  per layer (the FFT of a real signal is symmetric, so the half spectrum holds all of it).

Layers proposed for distillation are the ``k`` layers with the highest intensity (the "hot" ones:
for CaiT the first few and the last few, a U-shaped curve). For a teacher-student pair the teacher's
hot layers are mapped onto the student by position from the nearer end: hot layers in the teacher's
first half pair with the student's layers at the same index, those in its second half with the
student's layers at the same distance from the end. CaiT-S24 -> DeiT (12 blocks) with teacher
0, 1, 18-23 thus gives student 0, 1, 6-11, the paper's choice.

This module only measures; reading images, drawing and writing files is the command-line tool's
(tools/analysis/spectral_analysis.py).
"""
import fnmatch
import re
from typing import Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn as nn

from mmkd_ext.distillers.taps import FeatureTaps, module_paths
from mmkd_ext.utils.tokens import feature_map, num_extra_tokens, split_tap


def spectral_intensity(fmap: torch.Tensor) -> torch.Tensor:
    """Mean |rfft2(X, norm='ortho')| over batch, channels and frequencies.

    Args:
        fmap (torch.Tensor): a feature map (B, C, H, W).

    Returns:
        torch.Tensor: a scalar (float32).
    """
    return torch.fft.rfft2(fmap.float(), norm='ortho').abs().mean()


def channel_spectrum(fmap: torch.Tensor) -> torch.Tensor:
    """Mean over batch and positions of |rfft over the channels| ('ortho').

    Args:
        fmap (torch.Tensor): a feature map (B, C, H, W).

    Returns:
        torch.Tensor: (C // 2 + 1,) float32.
    """
    return torch.fft.rfft(fmap.float(), dim=1, norm='ortho').abs().mean(dim=(0, 2, 3))


def find_layers(model: nn.Module, patterns: Optional[Sequence[str]] = None) -> List[str]:
    """Module paths of the layers to analyse, in depth order.

    Args:
        model (nn.Module): the model.
        patterns (Sequence[str], optional): shell-style patterns of module paths (e.g.
            ``backbone.stages.*.blocks.*``): every matching path, children of a match excluded.
            Defaults to None: the main sequence of the backbone, ``layers`` (ViT/DeiT/CaiT
            blocks), ``stages`` (Swin, ConvNeXt), ``blocks``, or ``layer1..N`` (ResNet and other
            CNNs).

    Returns:
        list[str]: module paths.
    """
    if patterns:
        paths = [
            p for p in module_paths(model) if any(fnmatch.fnmatchcase(p, pat) for pat in patterns)
        ]
        paths = [p for p in paths if not any(p.startswith(q + '.') for q in paths)]
        if not paths:
            raise ValueError(f'No module path matches {list(patterns)}; '
                             f'`python tools/list_taps.py CONFIG` lists them.')
        return paths
    backbone, prefix = (model.backbone, 'backbone.') if hasattr(model, 'backbone') else (model, '')
    for name in ('layers', 'stages', 'blocks'):
        seq = getattr(backbone, name, None)
        if isinstance(seq, (nn.ModuleList, nn.Sequential)) and len(seq):
            return [f'{prefix}{name}.{i}' for i in range(len(seq))]
    numbered = [(int(m.group(1)), n) for n, _ in backbone.named_children()
                if (m := re.fullmatch(r'layer(\d+)', n))]
    if numbered:
        return [f'{prefix}{n}' for _, n in sorted(numbered)]
    raise ValueError(f'Cannot find the layer sequence of {type(backbone).__name__}: pass --layers '
                     f'patterns (e.g. "backbone.stages.*").')


def grid_path(model: nn.Module) -> Optional[str]:
    """``backbone.patch_embed`` (or ``patch_embed``) when the model has one (it returns
    (tokens, (h, w))), else None."""
    for path in ('backbone.patch_embed', 'patch_embed'):
        if path in dict(model.named_modules()):
            return path
    return None


@torch.no_grad()
def analyse_model(model: nn.Module,
                  batches: Iterable[torch.Tensor],
                  layers: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """Spectral intensity and channel spectrum of each layer, averaged over all images.

    Args:
        model (nn.Module): run in eval mode with ``mode='tensor'`` (its mode is restored after).
        batches (Iterable[torch.Tensor]): preprocessed images (B, C, H, W), i.e. the output of the
            model's ``data_preprocessor``.
        layers (Sequence[str], optional): module paths. Defaults to None (:func:`find_layers`).

    Returns:
        dict: ``layers`` (paths), ``intensity`` (a float per layer), ``channel_spectrum`` (a list
        of floats per layer), ``shapes`` (map shape (C, H, W) per layer) and ``grid`` (the module
        giving the patch grid when some layer outputs plain tokens, which a SpectralKD config then
        needs as its ``grid`` tap; else None).
    """
    layers = list(layers or find_layers(model))
    grid = grid_path(model)
    taps = FeatureTaps(model, layers + ([grid] if grid else []), 'model')
    extra = num_extra_tokens(model)
    sums_i = [0.0] * len(layers)
    sums_c: List[Optional[torch.Tensor]] = [None] * len(layers)
    shapes: List[Optional[tuple]] = [None] * len(layers)
    count, plain_tokens = 0, False
    was_training = model.training
    model.eval()
    try:
        for inputs in batches:
            with taps.record(stop_when_complete=True) as store:
                model(inputs, None, mode='tensor')
            run_grid = split_tap(store[grid])[1] if grid else None
            b = inputs.shape[0]
            for i, path in enumerate(layers):
                value = store[path]
                plain_tokens |= torch.is_tensor(value) and value.dim() == 3
                fmap = feature_map(value, extra, run_grid)
                shapes[i] = tuple(fmap.shape[1:])
                sums_i[i] += float(spectral_intensity(fmap)) * b
                spec = channel_spectrum(fmap) * b
                sums_c[i] = spec if sums_c[i] is None else sums_c[i] + spec
            count += b
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError('analyse_model got no batch.')
    return dict(
        layers=layers,
        intensity=[s / count for s in sums_i],
        channel_spectrum=[(c / count).tolist() for c in sums_c],
        shapes=shapes,
        grid=grid if plain_tokens else None)


def default_num_layers(depth: int) -> int:
    """How many layers to propose: all of a short stage sequence (<= 4, e.g. Swin's stages), else a
    third of the depth (at least 2): 8 of CaiT-S24's 24 blocks, the paper's count."""
    return depth if depth <= 4 else max(2, round(depth / 3))


def propose_layers(intensity: Sequence[float], k: Optional[int] = None) -> List[int]:
    """Indices (in depth order) of the ``k`` layers with the highest intensity.

    Args:
        intensity (Sequence[float]): one value per layer.
        k (int, optional): how many. Defaults to None (:func:`default_num_layers`).

    Returns:
        list[int]: sorted layer indices.
    """
    k = default_num_layers(len(intensity)) if k is None else min(k, len(intensity))
    order = sorted(range(len(intensity)), key=lambda i: -intensity[i])
    return sorted(order[:k])


def pair_layers(teacher_idx: Sequence[int], n_teacher: int, n_student: int) -> List[tuple]:
    """(student index, teacher index) pairs: a teacher layer in the first half of its depth pairs
    with the student layer of the same index, one in the second half with the student layer at the
    same distance from the end. Pairs falling outside the student or on a taken student layer are
    dropped.

    Args:
        teacher_idx (Sequence[int]): the teacher's proposed layers.
        n_teacher (int): the teacher's depth (layers analysed).
        n_student (int): the student's depth.

    Returns:
        list[tuple]: sorted (student index, teacher index) pairs.
    """
    pairs, taken = [], set()
    for t in teacher_idx:
        s = t if t < n_teacher / 2 else n_student - (n_teacher - t)
        if 0 <= s < n_student and s not in taken:
            pairs.append((s, t))
            taken.add(s)
    return sorted(pairs)


__all__ = [
    'spectral_intensity', 'channel_spectrum', 'find_layers', 'grid_path', 'analyse_model',
    'default_num_layers', 'propose_layers', 'pair_layers'
]
