"""Spectral layer analysis (SpectralKD): where in its depth does a model keep its information?

Definitions (ours: the paper's normalisation, its Eq. 5, is not reproduced; these are faithful in
spirit and documented in docs/methods/spectralkd.md). For a layer output laid out as a map
X (B, C, H, W) (token layers: extra tokens dropped, tokens laid on their patch grid):

* **spectral intensity**: mean over b, c, u, v of |rfft2_{H,W}(X)| with the unitary ('ortho')
  normalisation, a scalar per layer;
* **channel spectrum**: mean over b, h, w of |rfft_C(X)| ('ortho'), a vector of C // 2 + 1 values per
  layer (the FFT of a real signal is symmetric, so the half spectrum holds all of it).

Layers proposed for distillation are the ``k`` layers with the highest intensity (the "hot" ones: for
CaiT the first few and the last few, a U-shaped curve). For a teacher-student pair the teacher's hot
layers are mapped onto the student by position from the nearer end: hot layers in the teacher's first
half pair with the student's layers at the same index, those in its second half with the student's
layers at the same distance from the end. CaiT-S24 -> DeiT (12 blocks) with teacher 0, 1, 18-23 thus
gives student 0, 1, 6-11, the paper's choice.
"""
import fnmatch
import re
import textwrap
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from mmkd_ext.distillers.taps import FeatureTaps, module_paths
from mmkd_ext.utils.tokens import feature_map
from mmkd_ext.utils.tokens import num_extra_tokens, split_tap


def spectral_intensity(fmap: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> scalar: mean |rfft2(X, norm='ortho')| over batch, channels and frequencies."""
    return torch.fft.rfft2(fmap.float(), norm='ortho').abs().mean()


def channel_spectrum(fmap: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (C // 2 + 1,): mean over batch and positions of |rfft over C| ('ortho')."""
    return torch.fft.rfft(fmap.float(), dim=1, norm='ortho').abs().mean(dim=(0, 2, 3))


def find_layers(model: nn.Module, patterns: Optional[Sequence[str]] = None) -> List[str]:
    """Module paths of the layers to analyse, in depth order.

    With ``patterns`` (shell-style, e.g. ``backbone.stages.*.blocks.*``): every module path matching
    one of them, children of a match excluded. Otherwise the main sequence of the backbone:
    ``layers`` (ViT/DeiT/CaiT blocks), ``stages`` (Swin, ConvNeXt), ``blocks``, or ``layer1..N``
    (ResNet and other CNNs).
    """
    if patterns:
        paths = [p for p in module_paths(model) if any(fnmatch.fnmatchcase(p, pat) for pat in patterns)]
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
    """``backbone.patch_embed`` when the model has one (it returns (tokens, (h, w))), else None."""
    for path in ('backbone.patch_embed', 'patch_embed'):
        if path in dict(model.named_modules()):
            return path
    return None


@torch.no_grad()
def analyse_model(model: nn.Module, batches: Iterable[torch.Tensor],
                  layers: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """Run ``model`` (eval, ``mode='tensor'``) on ``batches`` of preprocessed images (B, C, H, W).

    Returns ``dict(layers=[paths], intensity=[float per layer], channel_spectrum=[[floats] per
    layer], shapes=[map shape (C, H, W) per layer], grid=path or None)``, averaged over all images;
    ``grid`` is the module giving the patch grid when some layer outputs plain tokens (a SpectralKD
    config then needs it as its ``grid`` tap).
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
                is_tokens = torch.is_tensor(value) and value.dim() == 3
                plain_tokens |= is_tokens
                fmap = feature_map(value, extra, run_grid)
                shapes[i] = tuple(fmap.shape[1:])
                sums_i[i] += float(spectral_intensity(fmap)) * b
                spec = channel_spectrum(fmap) * b
                sums_c[i] = spec if sums_c[i] is None else sums_c[i] + spec
            count += b
    finally:
        taps.remove()
        model.train(was_training)
    if count == 0:
        raise ValueError('analyse_model got no batch.')
    return dict(layers=layers, intensity=[s / count for s in sums_i],
                channel_spectrum=[(c / count).tolist() for c in sums_c], shapes=shapes,
                grid=grid if plain_tokens else None)


def default_num_layers(depth: int) -> int:
    """How many layers to propose: all of a short stage sequence (<= 4, e.g. Swin's stages), else a
    third of the depth (at least 2): 8 of CaiT-S24's 24 blocks, the paper's count."""
    return depth if depth <= 4 else max(2, round(depth / 3))


def propose_layers(intensity: Sequence[float], k: Optional[int] = None) -> List[int]:
    """Indices (in depth order) of the ``k`` layers with the highest intensity."""
    k = default_num_layers(len(intensity)) if k is None else min(k, len(intensity))
    order = sorted(range(len(intensity)), key=lambda i: -intensity[i])
    return sorted(order[:k])


def pair_layers(teacher_idx: Sequence[int], n_teacher: int, n_student: int) -> List[tuple]:
    """(student index, teacher index) pairs: a teacher layer in the first half of its depth pairs
    with the student layer of the same index, one in the second half with the student layer at the
    same distance from the end. Pairs falling outside the student or on a taken student layer are
    dropped."""
    pairs, taken = [], set()
    for t in teacher_idx:
        s = t if t < n_teacher / 2 else n_student - (n_teacher - t)
        if 0 <= s < n_student and s not in taken:
            pairs.append((s, t))
            taken.add(s)
    return sorted(pairs)


def resample_spectrum(spectrum: Sequence[float], bins: int = 64) -> np.ndarray:
    """A channel spectrum of any length -> ``bins`` values over normalised frequency [0, 0.5], so that
    layers (and models) of different widths share the axes of one heat map."""
    spectrum = np.asarray(spectrum, dtype=np.float64)
    if len(spectrum) == 1:
        return np.full(bins, spectrum[0])
    x = np.linspace(0.0, 1.0, len(spectrum))
    return np.interp(np.linspace(0.0, 1.0, bins), x, spectrum)


def plot_intensity(results: Dict[str, dict], path: str, title: str = 'Spectral intensity over depth'):
    """One line per model (e.g. teacher and student) over relative depth; proposed layers starred.

    ``results``: {label: analyse_model(...) output + ``proposed`` (indices)}. Writes a PNG.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for label, res in results.items():
        n = len(res['intensity'])
        x = np.arange(n) / max(n - 1, 1)
        line, = ax.plot(x, res['intensity'], marker='o', ms=3, label=f'{label} ({n} layers)')
        hot = res.get('proposed', [])
        ax.plot(x[hot], np.asarray(res['intensity'])[hot], linestyle='none', marker='*', ms=11,
                color=line.get_color(), markeredgecolor='k', markeredgewidth=0.5)
        for i in hot:
            ax.annotate(str(i), (x[i], res['intensity'][i]), textcoords='offset points',
                        xytext=(0, 6), ha='center', fontsize=7)
    ax.set_xlabel('relative depth (layer index / (layers - 1))')
    ax.set_ylabel('mean |rfft2(X)| (ortho)')
    ax.set_title(title + '  (* = proposed to distill)', fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_channel_spectra(results: Dict[str, dict], path: str, bins: int = 64):
    """A heat map per model: rows = layers, columns = normalised channel frequency, colour =
    log10 of the mean |FFT over channels|. Writes a PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results), figsize=(3.6 * len(results), 3.6), dpi=100,
                             squeeze=False)
    for ax, (label, res) in zip(axes[0], results.items()):
        grid = np.stack([resample_spectrum(s, bins) for s in res['channel_spectrum']])
        im = ax.imshow(np.log10(grid + 1e-12), aspect='auto', origin='lower', cmap='magma',
                       extent=(0.0, 0.5, -0.5, len(grid) - 0.5))
        ax.set_title(label, fontsize=10)
        ax.set_xlabel('channel frequency (cycles / channel)')
        ax.set_ylabel('layer')
        ax.set_yticks(range(len(grid)))
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label='log10 mean |FFT_C|')
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def config_snippet(student_layers: Sequence[str], teacher_layers: Sequence[str],
                   student_grid: Optional[str] = None, teacher_grid: Optional[str] = None,
                   loss_weight: float = 0.2) -> str:
    """The SpectralKDLoss entry of a distillation config's ``methods`` for the given layer pairs."""

    def taps(layers, grid):
        lines = textwrap.wrap(', '.join(repr(p) for p in layers), width=80,
                              initial_indent='        feats=[', subsequent_indent=' ' * 15)
        extra = f',\n        grid={grid!r}' if grid else ''
        return 'dict(\n' + '\n'.join(lines) + ']' + extra + ')'

    return (f"dict(\n    type='SpectralKDLoss',\n    loss_weight={loss_weight},\n"
            f'    student_taps={taps(student_layers, student_grid)},\n'
            f'    teacher_taps={taps(teacher_layers, teacher_grid)}),')


__all__ = ['spectral_intensity', 'channel_spectrum', 'find_layers', 'analyse_model',
           'propose_layers', 'pair_layers', 'default_num_layers', 'plot_intensity',
           'plot_channel_spectra', 'config_snippet', 'resample_spectrum']
