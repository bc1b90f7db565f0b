"""Spectral layer analysis: per-layer spectral intensity and channel spectra, as pictures and JSON,
and the layers to distill with SpectralKD as a config snippet.

    python tools/analysis/spectral_analysis.py CONFIG_OR_MODEL [--checkpoint CKPT]
        [--teacher-checkpoint CKPT] [--data photos|val|FOLDER] [--num-images 64]
        [--batch-size 16] [--shape C H W] [--layers PATTERN ...] [--teacher-layers PATTERN ...]
        [--num-layers K] [--device cpu|cuda] [--cfg-options KEY=VALUE ...] [--out-dir DIR]

CONFIG_OR_MODEL is a config file, a ``package::path`` config (e.g.
``mmpretrain::deit/deit-tiny_4xb256_in1k.py``) or an mmpretrain model name
(``mmpretrain.get_model``, weights only from --checkpoint). A distillation config
(``type='mmkd_ext.Distiller'``) analyses its teacher and its student and draws both on one plot; the
teacher's weights come from --teacher-checkpoint or the config's ``teacher_checkpoint`` (when that
file exists), the student's from --checkpoint (a distillation checkpoint's ``student.`` keys are
found by themselves).

Data (at most --num-images images; every image goes through each model's own ``data_preprocessor``):

- ``photos`` (default, offline): the two photographs scikit-learn ships (``china.jpg``,
  ``flower.jpg``, 427 x 640), cut into random crops (seeded by --seed) of the input shape's aspect
  and 25-100 % of the largest such crop's area, resized (antialiased bilinear) to the input shape,
  in the channel order ``LoadImageFromFile`` gives (BGR; grey for 1-channel models). The input shape
  is --shape, else the distiller's ``input_shape``, else the ``CenterCrop`` size of the config's
  test pipeline, else 224 x 224, with as many channels as the data preprocessor normalises.
- ``val``: the config's own validation dataset (``val_dataloader``, else ``test_dataloader``) with
  its own pipeline: ImageNet val for the shipped configs, the held-out digits for configs/demo/. A
  seeded random subset when the dataset is larger than --num-images.
- a folder: its image files (searched recursively, sorted; a seeded subset when there are more than
  --num-images), each through the test pipeline of the config's val (else test) dataloader, e.g.
  ``LoadImageFromFile, ResizeEdge, CenterCrop, PackInputs``. A pipeline that loads nothing (the
  digits are arrays in memory) or a config without one gets ``LoadImageFromFile`` and a resize to
  the input shape (as for ``photos``) in front.

Layers: the backbone's main sequence (ViT/DeiT/CaiT ``layers``, Swin/ConvNeXt ``stages``, ResNet
``layer1..N``) unless --layers gives shell-style patterns of module paths.

Writes DIR/spectral_intensity.png, DIR/channel_spectra.png and DIR/spectral_analysis.json (every
number, which images were read, the snippet), and prints the proposed layers as the SpectralKDLoss
entry of a config's ``methods``.
"""
import argparse
import copy
import json
import math
import os
import os.path as osp
import textwrap

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import DictAction

import mmkd_ext  # noqa: F401  (registers the models; the package is installed by tools/setup.sh)
from mmkd_ext.analysis.spectral import (analyse_model, default_num_layers, find_layers, pair_layers,
                                        propose_layers)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm', '.tif', '.tiff', '.webp')
# Area of a photo crop, as a fraction of the largest crop of the input's aspect: at 224 px even the
# smallest crop (213 px high) is barely upsampled, so upsampling blur does not dim the spectrum.
CROP_AREA = (0.25, 1.0)
# ITU-R BT.601 luma, what OpenCV (LoadImageFromFile's decoder) uses for grey images.
LUMA_RGB = (0.299, 0.587, 0.114)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', metavar='CONFIG_OR_MODEL')
    parser.add_argument(
        '--checkpoint', help='weights of the model (of the student for a '
        'distillation config)')
    parser.add_argument(
        '--teacher-checkpoint',
        help="teacher weights (default: the config's "
        "teacher_checkpoint when the file exists; '' for none)")
    parser.add_argument(
        '--data',
        default='photos',
        help="'photos' (scikit-learn's sample photographs, random crops), 'val' "
        "(the config's validation dataset) or an image folder")
    parser.add_argument('--num-images', type=int, default=64, help='at most this many images')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument(
        '--shape',
        type=int,
        nargs=3,
        metavar=('C', 'H', 'W'),
        help='input shape of the photo crops (and of folder images when the '
        "config's pipeline loads nothing); default: see the data section above")
    parser.add_argument('--layers', nargs='+', help='module path patterns (student / model)')
    parser.add_argument('--teacher-layers', nargs='+', help='module path patterns of the teacher')
    parser.add_argument(
        '--num-layers',
        type=int,
        help='how many layers to propose (default: all of <= 4 stages, else a '
        'third of the depth)')
    parser.add_argument(
        '--loss-weight', type=float, default=0.2, help='loss_weight written in the printed snippet')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. '
        'val_dataloader.dataset.data_root=PATH/TO/imagenet')
    parser.add_argument('--out-dir', help='default: work_dirs/spectral_analysis/NAME')
    parser.add_argument(
        '--seed',
        type=int,
        default=0,
        help='seed of the random weights, photo crops and image subsets')
    args = parser.parse_args(argv)
    if args.num_images < 1 or args.batch_size < 1:
        parser.error(f'--num-images and --batch-size must be >= 1, got {args.num_images} and '
                     f'{args.batch_size}.')
    if args.data not in ('photos', 'val') and not osp.isdir(args.data):
        parser.error(f"--data must be 'photos', 'val' or an existing image folder, got "
                     f"{args.data!r} (the digits of configs/demo/ are `--data val` of a demo "
                     f'config; a folder named like a keyword is given as ./{args.data}).')
    return args


# ---------------------------------------------------------------------------------------- models
def _load_weights(model, checkpoint, role):
    from mmkd_ext.utils.checkpoint import (load_checkpoint_file, load_state_dict_with_report,
                                           unwrap_state_dict)
    keys = unwrap_state_dict(load_checkpoint_file(checkpoint, map_location='cpu'))
    # A distillation checkpoint holds the student under 'student.'.
    distilled = any(k.startswith('student.') for k in keys)
    prefix = 'student.' if role != 'teacher' and distilled else None
    load_state_dict_with_report(model, checkpoint, prefix=prefix)


def build_models(args):
    """Build the models of ``args.model`` with their weights, in eval mode on ``args.device``.

    Returns:
        tuple: {role: model} ('model', or 'teacher' and 'student'), the whole config (its
        dataloaders give ``--data val`` and the folder pipeline) and the distiller's
        ``input_shape`` (None for a single model).
    """
    from mmengine.registry import init_default_scope

    from mmkd_ext.apis.runner import is_distiller
    from mmkd_ext.distillers.builder import build_model
    from mmkd_ext.utils.config import load_config
    spec, input_shape = args.model, None
    if osp.isfile(spec) or '::' in spec:
        cfg = load_config(spec, args.cfg_options, activate=True)
        model_cfg = cfg.model
        if is_distiller(model_cfg):
            models = {role: build_model(model_cfg[role]) for role in ('teacher', 'student')}
            input_shape = model_cfg.get('input_shape')
            if args.teacher_checkpoint is not None:  # '' means: no teacher weights
                t_ckpt = args.teacher_checkpoint or None
            else:
                t_ckpt = model_cfg.get('teacher_checkpoint')
                if t_ckpt and '://' not in t_ckpt and not osp.isfile(t_ckpt):
                    print(f'Teacher checkpoint {t_ckpt} not found: the teacher keeps random '
                          f'weights (pass --teacher-checkpoint).')
                    t_ckpt = None
            ckpts = dict(teacher=t_ckpt, student=args.checkpoint)
        else:
            models = {'model': build_model(model_cfg)}
            ckpts = dict(model=args.checkpoint)
    else:
        from mmpretrain import get_model
        init_default_scope('mmpretrain')
        models = {'model': get_model(spec, pretrained=False)}
        cfg = copy.deepcopy(models['model']._config)  # get_model keeps the model's config here
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        ckpts = dict(model=args.checkpoint)
    for role, model in models.items():
        if hasattr(model, 'init_weights'):
            model.init_weights()
        if ckpts.get(role):
            _load_weights(model, ckpts[role], role)
        model.to(args.device).eval()
    return models, cfg, input_shape


# ------------------------------------------------------------------------------------------ data
def _val_dataset_cfg(cfg):
    """The dataset dict of the config's val (else test) dataloader, or None."""
    for key in ('val_dataloader', 'test_dataloader'):
        loader = cfg.get(key) if cfg is not None else None
        if loader and loader.get('dataset'):
            return loader.dataset
    return None


def _input_channels(model) -> int:
    mean = getattr(model.data_preprocessor, 'mean', None)
    return int(mean.numel()) if torch.is_tensor(mean) else 3


def default_shape(args, cfg, input_shape, model):
    """(C, H, W) of photo crops: --shape, the distiller's ``input_shape``, the ``CenterCrop`` of
    the test pipeline (channels from the data preprocessor's mean) or 224 x 224."""
    if args.shape:
        return tuple(args.shape)
    if input_shape:
        return tuple(int(v) for v in input_shape)
    size = (224, 224)
    ds = _val_dataset_cfg(cfg)
    for step in (ds.get('pipeline') or []) if ds else []:
        if str(step.get('type', '')).split('.')[-1] == 'CenterCrop':
            crop = step.get('crop_size')
            size = (crop, crop) if isinstance(crop, int) else (crop[1], crop[0])  # crop is (w, h)
    return (_input_channels(model), ) + tuple(size)


def _pick(total: int, num: int, seed: int):
    """All of ``range(total)`` when ``num`` covers it, else a seeded random subset, sorted."""
    if num >= total:
        return list(range(total))
    return sorted(np.random.RandomState(seed).choice(total, num, replace=False).tolist())


def sample_photo_crops(num: int, shape, seed: int = 0):
    """Random crops of scikit-learn's two sample photographs, resized to ``shape``.

    Crop ``k`` comes from photo ``k % 2``; its aspect is the input's, its area a uniform fraction
    (``CROP_AREA``) of the largest crop of that aspect, its place uniform; the crop is resized with
    antialiased bilinear interpolation and rounded to uint8, as an image file would hold it.

    Args:
        num (int): how many crops.
        shape (tuple): (C, H, W) with C = 3 (BGR, the order ``LoadImageFromFile`` gives) or 1 (grey,
            BT.601 luma).
        seed (int): seed of the crop boxes. Defaults to 0.

    Returns:
        tuple: uint8 images (num, C, H, W) and one dict per image (``photo``, ``top``, ``left``,
        ``height``, ``width``: the box in the 427 x 640 photograph).
    """
    try:
        from sklearn.datasets import load_sample_images
    except ImportError as e:
        raise ImportError('--data photos needs scikit-learn (pip install scikit-learn), or give '
                          '--data val / an image folder.') from e
    c, h, w = shape
    if c not in (1, 3):
        raise ValueError(f'Photo crops are grey (1 channel) or colour (3 channels); the input '
                         f'shape {tuple(shape)} has {c}: give --shape 3 H W or 1 H W.')
    photos = load_sample_images()
    names = [osp.basename(f) for f in photos.filenames]
    rng = np.random.RandomState(seed)
    images, boxes = [], []
    for k in range(num):
        j = k % len(photos.images)
        photo = photos.images[j]  # (427, 640, 3) RGB uint8
        ph, pw = photo.shape[:2]
        largest_h = min(ph, pw * h / w)
        ch = max(1, min(ph, int(round(largest_h * math.sqrt(rng.uniform(*CROP_AREA))))))
        cw = max(1, min(pw, int(round(ch * w / h))))
        top, left = rng.randint(0, ph - ch + 1), rng.randint(0, pw - cw + 1)
        crop = torch.from_numpy(np.ascontiguousarray(photo[top:top + ch, left:left + cw]))
        crop = crop.permute(2, 0, 1)[None].float()
        crop = F.interpolate(
            crop, size=(h, w), mode='bilinear', align_corners=False,
            antialias=True)[0].round().clamp(0, 255)
        if c == 1:
            luma = torch.tensor(LUMA_RGB).view(3, 1, 1)
            crop = (crop * luma).sum(0, keepdim=True).round().clamp(0, 255)
        else:
            crop = crop.flip(0)  # RGB -> BGR
        images.append(crop.to(torch.uint8))
        boxes.append(dict(photo=names[j], top=int(top), left=int(left), height=ch, width=cw))
    return torch.stack(images), boxes


def val_images(cfg, num: int, seed: int = 0):
    """Images of the config's validation dataset through its own pipeline.

    Args:
        cfg (Config): a config with a ``val_dataloader`` (or ``test_dataloader``).
        num (int): at most this many (a seeded random subset when the dataset is larger).
        seed (int): seed of the subset. Defaults to 0.

    Returns:
        tuple: a list of uint8 images (C, H, W) (the pipeline's ``inputs``) and one dict per image
        (``index`` in the dataset, and its ``img_path`` when it has one).
    """
    from mmengine.registry import DATASETS
    ds_cfg = _val_dataset_cfg(cfg)
    if ds_cfg is None:
        raise ValueError('--data val reads the val_dataloader (or test_dataloader) of the config, '
                         'and this config has none: give an image folder (--data PATH) or use the '
                         'default photos.')
    try:
        dataset = DATASETS.build(copy.deepcopy(ds_cfg))
    except Exception as e:  # noqa: BLE001 (a missing dataset shows as many kinds of error)
        raise RuntimeError(
            f'Cannot build the validation dataset {ds_cfg.get("type")} of the config '
            f'(data_root={ds_cfg.get("data_root")!r}): {type(e).__name__}: {e}. Put the data '
            f'where the config says, point to it with --cfg-options '
            f'val_dataloader.dataset.data_root=PATH, or use --data PATH/TO/FOLDER or the default '
            f'photos.') from e
    if len(dataset) == 0:
        raise ValueError(f'The validation dataset {ds_cfg.get("type")} of the config is empty.')
    images, info = [], []
    for i in _pick(len(dataset), num, seed):
        images.append(_packed_inputs(dataset[i], f'item {i} of the validation dataset'))
        data_info = dataset.get_data_info(i) if hasattr(dataset, 'get_data_info') else {}
        info.append(
            dict(
                index=i,
                **({
                    'img_path': data_info['img_path']
                } if data_info.get('img_path') else {})))
    return images, info


def folder_pipeline(cfg, shape):
    """The test pipeline of the config's val (else test) dataloader, for image files.

    A pipeline that loads nothing (or none at all) gets ``LoadImageFromFile`` (grey for 1-channel
    inputs) and a resize to ``shape`` (C, H, W) in front, and ``PackInputs`` at the end if absent.
    """
    ds = _val_dataset_cfg(cfg)
    steps = [copy.deepcopy(dict(s)) for s in ((ds.get('pipeline') or []) if ds else [])]
    if not any('LoadImage' in str(s.get('type', '')) for s in steps):
        c, h, w = shape
        steps = [
            dict(type='LoadImageFromFile', color_type='grayscale' if c == 1 else 'color'),
            dict(type='Resize', scale=(w, h), interpolation='area')
        ] + steps
    if not any('Pack' in str(s.get('type', '')) for s in steps):
        steps.append(dict(type='PackInputs'))
    return steps


def folder_images(folder: str, pipeline, num: int, seed: int = 0):
    """Image files under ``folder`` (recursive) through ``pipeline`` (a list of transform dicts).

    Args:
        folder (str): the folder.
        pipeline (list[dict]): e.g. :func:`folder_pipeline`'s.
        num (int): at most this many files (a seeded random subset of the sorted list).
        seed (int): seed of the subset. Defaults to 0.

    Returns:
        tuple: a list of uint8 images (C, H, W) and one dict per image (``file``, relative to
        ``folder``).
    """
    from mmengine.dataset import Compose
    files = sorted(
        osp.relpath(osp.join(d, f), folder) for d, _, names in os.walk(folder) for f in names
        if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise FileNotFoundError(f'No image file ({", ".join(IMAGE_EXTENSIONS)}) under {folder!r}.')
    transform = Compose(pipeline)
    images, info = [], []
    for i in _pick(len(files), num, seed):
        results = transform(dict(img_path=osp.join(folder, files[i])))
        images.append(_packed_inputs(results, files[i]))
        info.append(dict(file=files[i]))
    return images, info


def _packed_inputs(results, what):
    if not isinstance(results, dict) or not torch.is_tensor(results.get('inputs')):
        raise ValueError(f'The pipeline gave no `inputs` tensor for {what}: it must end with '
                         f"PackInputs (got {type(results).__name__} "
                         f"{sorted(results) if isinstance(results, dict) else ''}).")
    return results['inputs']


def read_images(args, cfg, shape):
    """The raw images of ``args.data`` (uint8 (C, H, W) each) and what each one is."""
    if args.data == 'photos':
        images, info = sample_photo_crops(args.num_images, shape, args.seed)
        return list(images), info
    if args.data == 'val':
        return val_images(cfg, args.num_images, args.seed)
    return folder_images(args.data, folder_pipeline(cfg, shape), args.num_images, args.seed)


def preprocess(model, images):
    """A list of raw images (C, H, W) -> the model's input batch (B, C, H, W), through its own
    ``data_preprocessor`` (channel order, normalisation, padding) as in testing."""
    channels = _input_channels(model)
    if getattr(model.data_preprocessor, 'mean', None) is not None and any(img.shape[0] != channels
                                                                          for img in images):
        raise ValueError(f'The images have {sorted({int(i.shape[0]) for i in images})} channels, '
                         f"but {type(model).__name__}'s data preprocessor normalises {channels}: "
                         f'give --shape {channels} H W (photos) or a pipeline that loads '
                         f'{channels}-channel images.')
    same = all(img.shape == images[0].shape for img in images)
    batch = torch.stack(images) if same else list(images)
    return model.data_preprocessor(dict(inputs=batch, data_samples=None), False)['inputs']


# --------------------------------------------------------------------------------------- outputs
def resample_spectrum(spectrum, bins: int = 64) -> np.ndarray:
    """A channel spectrum of any length -> ``bins`` values over normalised frequency [0, 0.5], so
    that layers (and models) of different widths share the axes of one heat map."""
    spectrum = np.asarray(spectrum, dtype=np.float64)
    if len(spectrum) == 1:
        return np.full(bins, spectrum[0])
    x = np.linspace(0.0, 1.0, len(spectrum))
    return np.interp(np.linspace(0.0, 1.0, bins), x, spectrum)


def plot_intensity(results, path, title='Spectral intensity over depth'):
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
        ax.plot(
            x[hot],
            np.asarray(res['intensity'])[hot],
            linestyle='none',
            marker='*',
            ms=11,
            color=line.get_color(),
            markeredgecolor='k',
            markeredgewidth=0.5)
        for i in hot:
            ax.annotate(
                str(i), (x[i], res['intensity'][i]),
                textcoords='offset points',
                xytext=(0, 6),
                ha='center',
                fontsize=7)
    ax.set_xlabel('relative depth (layer index / (layers - 1))')
    ax.set_ylabel('mean |rfft2(X)| (ortho)')
    ax.set_title(title + '  (* = proposed to distill)', fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_channel_spectra(results, path, bins: int = 64):
    """A heat map per model: rows = layers, columns = normalised channel frequency, colour =
    log10 of the mean |FFT over channels|. Writes a PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(
        1, len(results), figsize=(3.6 * len(results), 3.6), dpi=100, squeeze=False)
    for ax, (label, res) in zip(axes[0], results.items()):
        grid = np.stack([resample_spectrum(s, bins) for s in res['channel_spectrum']])
        im = ax.imshow(
            np.log10(grid + 1e-12),
            aspect='auto',
            origin='lower',
            cmap='magma',
            extent=(0.0, 0.5, -0.5, len(grid) - 0.5))
        ax.set_title(label, fontsize=10)
        ax.set_xlabel('channel frequency (cycles / channel)')
        ax.set_ylabel('layer')
        ax.set_yticks(range(len(grid)))
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label='log10 mean |FFT_C|')
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def config_snippet(student_layers,
                   teacher_layers,
                   student_grid=None,
                   teacher_grid=None,
                   loss_weight=0.2) -> str:
    """The SpectralKDLoss entry of a distillation config's ``methods`` for the given layer pairs."""

    def taps(layers, grid):
        lines = textwrap.wrap(
            ', '.join(repr(p) for p in layers),
            width=80,
            initial_indent='        feats=[',
            subsequent_indent=' ' * 15)
        extra = f',\n        grid={grid!r}' if grid else ''
        return 'dict(\n' + '\n'.join(lines) + ']' + extra + ')'

    return (f"dict(\n    type='SpectralKDLoss',\n    loss_weight={loss_weight},\n"
            f'    student_taps={taps(student_layers, student_grid)},\n'
            f'    teacher_taps={taps(teacher_layers, teacher_grid)}),')


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    models, cfg, distiller_shape = build_models(args)
    first = models.get('student', models.get('model'))
    shape = default_shape(args, cfg, distiller_shape, first)
    images, described = read_images(args, cfg, shape)
    chunks = [images[i:i + args.batch_size] for i in range(0, len(images), args.batch_size)]
    patterns = dict(model=args.layers, student=args.layers, teacher=args.teacher_layers)
    results, input_shapes = {}, {}
    for role, model in models.items():
        layers = find_layers(model, patterns[role])
        batches = [preprocess(model, chunk) for chunk in chunks]
        input_shapes[role] = list(batches[0].shape[1:])
        results[role] = analyse_model(model, batches, layers)

    if 'teacher' in results:
        t, s = results['teacher'], results['student']
        k = args.num_layers or min(default_num_layers(len(t['layers'])), len(s['layers']))
        pairs = pair_layers(propose_layers(t['intensity'], k), len(t['layers']), len(s['layers']))
        t['proposed'] = [ti for _, ti in pairs]
        s['proposed'] = [si for si, _ in pairs]
        s['hottest'] = propose_layers(s['intensity'], k)
        student_layers = [s['layers'][i] for i in s['proposed']]
        teacher_layers = [t['layers'][i] for i in t['proposed']]
        snippet = config_snippet(student_layers, teacher_layers, s['grid'], t['grid'],
                                 args.loss_weight)
        how = (f"the teacher's {k} layers of highest spectral intensity, paired with the student's "
               f'by position from the nearer end')
    else:
        m = results['model']
        m['proposed'] = propose_layers(m['intensity'], args.num_layers)
        layers = [m['layers'][i] for i in m['proposed']]
        snippet = config_snippet(layers, layers, m['grid'], m['grid'], args.loss_weight)
        how = (f"this model's {len(layers)} layers of highest spectral intensity; as a teacher, "
               f"keep its list in teacher_taps and pair the student's layers with it")

    name = osp.splitext(osp.basename(args.model.split('::')[-1]))[0]
    out_dir = args.out_dir or osp.join('work_dirs', 'spectral_analysis', name)
    os.makedirs(out_dir, exist_ok=True)
    labels = {
        role: (f'{role}: {type(m.backbone).__name__}' if hasattr(m, 'backbone') else role)
        for role, m in models.items()
    }
    figures = dict(
        intensity=osp.join(out_dir, 'spectral_intensity.png'),
        channel_spectra=osp.join(out_dir, 'channel_spectra.png'))
    source = {
        'photos': "scikit-learn's sample photos",
        'val': 'validation set'
    }.get(args.data, osp.basename(osp.normpath(args.data)))
    plot_intensity({
        labels[r]: res
        for r, res in results.items()
    },
                   figures['intensity'],
                   title=f'{name}\n{len(images)} images: {source}')
    plot_channel_spectra({labels[r]: res for r, res in results.items()}, figures['channel_spectra'])
    report = dict(
        model=args.model,
        data=args.data,
        num_images=len(images),
        input_shape=input_shapes,
        inputs=described,
        figures=figures,
        snippet=snippet,
        models={
            role: dict(res, shapes=[list(x) for x in res['shapes']])
            for role, res in results.items()
        })
    with open(osp.join(out_dir, 'spectral_analysis.json'), 'w') as f:
        json.dump(report, f, indent=1)

    print(f'{len(images)} images ({source}), model input {input_shapes}')
    for role, res in results.items():
        print(f'== {labels[role]} ==')
        for i, (path, value) in enumerate(zip(res['layers'], res['intensity'])):
            mark = '  <- proposed' if i in res['proposed'] else ''
            print(f'{i:3d} {path:<32} {value:10.4f}{mark}')
    print(f'\nProposed ({how}). Paste into the methods of a distillation config:\n')
    print(snippet)
    print(f'\nFigures and numbers in {out_dir}')
    return report


if __name__ == '__main__':
    main()
