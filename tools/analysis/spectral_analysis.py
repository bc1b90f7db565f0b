"""Spectral layer analysis: per-layer spectral intensity and channel spectra, as pictures and JSON, and
the layers to distill with SpectralKD as a config snippet.

    python tools/analysis/spectral_analysis.py CONFIG_OR_MODEL [--checkpoint CKPT]
        [--teacher-checkpoint CKPT] [--data {digits,random}] [--num-batches 4] [--batch-size 16]
        [--shape C H W] [--layers PATTERN ...] [--teacher-layers PATTERN ...] [--num-layers K]
        [--out-dir DIR]

CONFIG_OR_MODEL is a config file, a ``package::path`` config (e.g.
``mmpretrain::deit/deit-tiny_4xb256_in1k.py``) or an mmpretrain model name (``mmpretrain.get_model``,
weights only from --checkpoint). A distillation config (``type='mmkd_ext.Distiller'``) analyses its
teacher and its student and draws both on one plot; the teacher's weights come from
--teacher-checkpoint or the config's ``teacher_checkpoint`` (when that file exists), the student's
from --checkpoint (a distillation checkpoint's ``student.`` keys are found by themselves).

Data: ``digits`` (scikit-learn's bundled handwritten digits, resized to the input shape, replicated
over channels, normalised by each model's own data preprocessor; no download) or ``random``
(standard-normal images, given to the models as they are). Layers: the backbone's main sequence
(ViT/DeiT/CaiT ``layers``, Swin/ConvNeXt ``stages``, ResNet ``layer1..N``) unless --layers gives
shell-style patterns of module paths.

Writes DIR/spectral_intensity.png, DIR/channel_spectra.png and DIR/spectral_analysis.json, and prints
the proposed layers as the SpectralKDLoss entry of a config's ``methods``.
"""
import argparse
import json
import os
import os.path as osp
import sys

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)  # run from a checkout without installing

import mmkd_ext  # noqa: E402,F401
from mmkd_ext.analysis.spectral import (analyse_model, config_snippet,  # noqa: E402
                                        default_num_layers, find_layers, pair_layers,
                                        plot_channel_spectra, plot_intensity, propose_layers)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', metavar='CONFIG_OR_MODEL')
    parser.add_argument('--checkpoint', help='weights of the model (of the student for a '
                        'distillation config)')
    parser.add_argument('--teacher-checkpoint', help="teacher weights (default: the config's "
                        "teacher_checkpoint when the file exists; '' for none)")
    parser.add_argument('--data', choices=['digits', 'random'], default='digits')
    parser.add_argument('--num-batches', type=int, default=4)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--shape', type=int, nargs=3, metavar=('C', 'H', 'W'),
                        help='input shape (default: the distiller input_shape, else 3 224 224)')
    parser.add_argument('--layers', nargs='+', help='module path patterns (student / model)')
    parser.add_argument('--teacher-layers', nargs='+', help='module path patterns of the teacher')
    parser.add_argument('--num-layers', type=int,
                        help='how many layers to propose (default: all of <= 4 stages, else a '
                        'third of the depth)')
    parser.add_argument('--loss-weight', type=float, default=0.2,
                        help='loss_weight written in the printed snippet')
    parser.add_argument('--out-dir', help='default: work_dirs/spectral_analysis/NAME')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def _load_weights(model, checkpoint, role):
    from mmengine.runner.checkpoint import CheckpointLoader

    from mmkd_ext.utils.checkpoint import load_state_dict_with_report, unwrap_state_dict
    keys = unwrap_state_dict(CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu'))
    # A distillation checkpoint holds the student under 'student.'.
    prefix = 'student.' if role != 'teacher' and any(k.startswith('student.') for k in keys) else None
    load_state_dict_with_report(model, checkpoint, prefix=prefix)


def build_models(args):
    """{role: model} ('model', or 'teacher' and 'student'), and the input shape."""
    from mmengine.registry import init_default_scope

    from mmkd_ext.apis.runner import is_distiller
    from mmkd_ext.utils.config import load_config
    from mmkd_ext.distillers.builder import build_model
    spec = args.model
    if osp.isfile(spec) or '::' in spec:
        model_cfg = load_config(spec, activate=True).model
        if is_distiller(model_cfg):
            models = {role: build_model(model_cfg[role]) for role in ('teacher', 'student')}
            shape = args.shape or tuple(model_cfg.get('input_shape', (3, 224, 224)))
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
            shape = args.shape or (3, 224, 224)
            ckpts = dict(model=args.checkpoint)
    else:
        from mmpretrain import get_model
        init_default_scope('mmpretrain')
        models = {'model': get_model(spec, pretrained=False)}
        shape = args.shape or (3, 224, 224)
        ckpts = dict(model=args.checkpoint)
    for role, model in models.items():
        if hasattr(model, 'init_weights'):
            model.init_weights()
        if ckpts.get(role):
            _load_weights(model, ckpts[role], role)
        model.eval()
    return models, tuple(shape)


def make_batches(kind, shape, num_batches, batch_size, seed):
    """Raw images (B, C, H, W): digits as 0..255 floats, or standard-normal noise."""
    gen = torch.Generator().manual_seed(seed)
    n = num_batches * batch_size
    c, h, w = shape
    if kind == 'random':
        images = torch.randn(n, c, h, w, generator=gen)
    else:
        from sklearn.datasets import load_digits
        digits = torch.from_numpy(load_digits().images).float() * (255.0 / 16.0)  # (1797, 8, 8)
        idx = torch.randperm(len(digits), generator=gen)[:n]
        images = digits[idx].unsqueeze(1)
        if (h, w) != (8, 8):
            images = torch.nn.functional.interpolate(images, size=(h, w), mode='bilinear',
                                                     align_corners=False)
        images = images.expand(-1, c, -1, -1).contiguous()
    return list(images.split(batch_size))


def preprocess(model, batch, kind):
    if kind == 'random':
        return batch  # noise stands for already-normalised inputs
    return model.data_preprocessor(dict(inputs=batch, data_samples=None), False)['inputs']


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    models, shape = build_models(args)
    raw = make_batches(args.data, shape, args.num_batches, args.batch_size, args.seed)
    patterns = dict(model=args.layers, student=args.layers, teacher=args.teacher_layers)
    results = {}
    for role, model in models.items():
        layers = find_layers(model, patterns[role])
        results[role] = analyse_model(model, [preprocess(model, b, args.data) for b in raw], layers)

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
    labels = {role: (f'{role}: {type(m.backbone).__name__}' if hasattr(m, 'backbone') else role)
              for role, m in models.items()}
    figures = dict(intensity=osp.join(out_dir, 'spectral_intensity.png'),
                   channel_spectra=osp.join(out_dir, 'channel_spectra.png'))
    plot_intensity({labels[r]: res for r, res in results.items()}, figures['intensity'],
                   title=name)
    plot_channel_spectra({labels[r]: res for r, res in results.items()},
                         figures['channel_spectra'])
    report = dict(model=args.model, data=args.data, num_images=args.num_batches * args.batch_size,
                  input_shape=list(shape), figures=figures, snippet=snippet, models={
                      role: dict(res, shapes=[list(x) for x in res['shapes']])
                      for role, res in results.items()})
    with open(osp.join(out_dir, 'spectral_analysis.json'), 'w') as f:
        json.dump(report, f, indent=1)

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
