"""The spectral analysis tool (tools/analysis/spectral_analysis.py): its data (scikit-learn's
sample photographs, the config's validation set, an image folder) and what it measures and
proposes, checked against crops, pipelines and spectra recomputed here by other means (PIL, forward
hooks, torch.fft)."""
import importlib.util
import json
import os.path as osp

import numpy as np
import pytest
import torch
from conftest import KD_CFG, ROOT, STUDENT_CFG, TEACHER_CFG
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

import mmkd_ext  # noqa: F401

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
TEST_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=32, edge='short'),
    dict(type='CenterCrop', crop_size=32),
    dict(type='PackInputs'),
]
TINY_MODELS = {
    'vit':
    dict(
        type='VisionTransformer',
        img_size=32,
        patch_size=8,
        arch=dict(embed_dims=32, num_layers=7, num_heads=2, feedforward_channels=64)),
    'swin':
    dict(
        type='SwinTransformer',
        img_size=32,
        window_size=2,
        pad_small_map=True,
        arch=dict(embed_dims=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2])),
}


def _tool():
    path = osp.join(ROOT, 'tools', 'analysis', 'spectral_analysis.py')
    spec = importlib.util.spec_from_file_location('spectral_analysis_tool', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_config(tmp_path, kind, with_pipeline=True):
    """A config file of a tiny random mmpretrain classifier (ImageNet normalisation, BGR -> RGB),
    with a 32 x 32 ImageNet-style test pipeline in its val dataloader."""
    cfg = dict(
        default_scope='mmpretrain',
        model=dict(
            type='ImageClassifier',
            data_preprocessor=dict(num_classes=10, mean=MEAN, std=STD, to_rgb=True),
            backbone=TINY_MODELS[kind],
            neck=None if kind == 'vit' else dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead', num_classes=10, in_channels=32 if kind == 'vit' else 64)))
    if with_pipeline:  # the dataset itself is never built by these tests
        cfg['val_dataloader'] = dict(
            batch_size=4,
            dataset=dict(type='CustomDataset', data_root='unused', pipeline=TEST_PIPELINE))
    path = str(tmp_path / f'tiny_{kind}.py')
    Config(cfg).dump(path)
    return path


def _saved_model(model_cfg, path, seed=1):
    """Build ``model_cfg`` with seeded random weights, save them to ``path``; return the model."""
    from mmkd_ext.distillers.builder import build_model
    init_default_scope('mmpretrain')
    torch.manual_seed(seed)
    model = build_model(model_cfg)
    model.init_weights()
    torch.save({'state_dict': model.state_dict()}, path)
    return model.eval()


def _spectra_by_hand(model, inputs, layers, patch=None):
    """Spectral intensity and channel spectrum per layer without the package's helpers: forward
    hooks, tokens laid on their grid here (cls token first, then the patch grid row-major)."""
    outs = {}
    handles = [
        model.get_submodule(p).register_forward_hook(
            lambda mod, args, out, p=p: outs.__setitem__(p, out)) for p in layers
    ]
    model.eval()
    with torch.no_grad():
        model(inputs, mode='tensor')
    for h in handles:
        h.remove()
    intensity, channel = [], []
    for p in layers:
        out = outs[p]
        if isinstance(out, tuple):  # Swin stage: (tokens, (h, w))
            tokens, (h, w) = out
            fmap = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)
        elif out.dim() == 3:  # ViT block: (B, 1 + h * w, C)
            h, w = inputs.shape[2] // patch, inputs.shape[3] // patch
            fmap = out[:, 1:].transpose(1, 2).reshape(out.shape[0], -1, h, w)
        else:
            fmap = out
        intensity.append(float(torch.fft.rfft2(fmap, norm='ortho').abs().mean()))
        channel.append(torch.fft.rfft(fmap, dim=1, norm='ortho').abs().mean((0, 2, 3)))
    return intensity, channel


def _top(values, k):
    return sorted(sorted(range(len(values)), key=lambda i: -values[i])[:k])


def _normalise_rgb(rgb_hwc):
    """uint8 RGB (N, H, W, 3) -> what an ImageNet-normalised model takes (N, 3, H, W)."""
    x = torch.as_tensor(np.asarray(rgb_hwc), dtype=torch.float32).permute(0, 3, 1, 2)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _pil_crop(photo, box, size_wh, grey=False):
    img = Image.fromarray(photo[box['top']:box['top'] + box['height'],
                                box['left']:box['left'] + box['width']])
    img = img.resize(size_wh, Image.BILINEAR)
    return np.asarray(img.convert('L') if grey else img).astype(np.float64)


# ------------------------------------------------------------------------------ the photo default
def test_sample_photos_are_crops_of_the_real_photographs():
    """The default inputs are crops of china.jpg / flower.jpg: each equals the same box cut and
    resized by PIL (and differs from a box moved by half its size)."""
    from sklearn.datasets import load_sample_images
    tool = _tool()
    bunch = load_sample_images()
    photos = {osp.basename(f): img for f, img in zip(bunch.filenames, bunch.images)}
    raw, boxes = tool.sample_photo_crops(10, (3, 24, 40), seed=3)
    assert raw.dtype == torch.uint8 and raw.shape == (10, 3, 24, 40)
    assert {b['photo'] for b in boxes} == {'china.jpg', 'flower.jpg'}
    assert len({(b['photo'], b['top'], b['left'], b['height']) for b in boxes}) == 10
    for k, box in enumerate(boxes):
        photo = photos[box['photo']]
        assert 0 <= box['top'] and box['top'] + box['height'] <= photo.shape[0]
        assert 0 <= box['left'] and box['left'] + box['width'] <= photo.shape[1]
        assert abs(box['width'] / box['height'] - 40 / 24) < 0.02  # the input's aspect
        largest = min(photo.shape[0], photo.shape[1] * 24 / 40)  # height of the largest crop
        assert 0.5 * largest - 1 <= box['height'] <= largest  # a quarter of its area or more
        rgb = raw[k].flip(0).permute(1, 2, 0).double().numpy()  # the tool gives BGR
        ref = _pil_crop(photo, box, (40, 24))
        assert np.abs(rgb - ref).mean() < 0.5, box
        moved = dict(box, top=box['top'] // 2, left=box['left'] // 2)
        if (moved['top'], moved['left']) != (box['top'], box['left']):
            assert np.abs(rgb - _pil_crop(photo, moved, (40, 24))).mean() > 5, box
    again, same_boxes = tool.sample_photo_crops(10, (3, 24, 40), seed=3)
    assert torch.equal(again, raw) and same_boxes == boxes
    assert tool.sample_photo_crops(10, (3, 24, 40), seed=4)[1] != boxes
    # Grey inputs for 1-channel models: BT.601 luma of the same crop.
    grey, gboxes = tool.sample_photo_crops(4, (1, 8, 8), seed=0)
    for k, box in enumerate(gboxes):
        ref = _pil_crop(photos[box['photo']], box, (8, 8), grey=True)
        assert np.abs(grey[k, 0].double().numpy() - ref).mean() < 0.5
    with pytest.raises(ValueError, match='grey .1 channel. or colour'):
        tool.sample_photo_crops(2, (2, 8, 8))


@pytest.mark.parametrize('kind', sorted(TINY_MODELS))
def test_analysis_tool_on_a_small_random_model(tmp_path, kind):
    """Default data (photo crops at the pipeline's CenterCrop size), the model's own normalisation,
    PNG + JSON written, intensities and proposals equal to a recomputation by hand."""
    from sklearn.datasets import load_sample_images
    path = _tiny_config(tmp_path, kind)
    model = _saved_model(Config.fromfile(path).model, tmp_path / 'w.pth')
    out = tmp_path / 'out'
    report = _tool().main([
        path, '--checkpoint',
        str(tmp_path / 'w.pth'), '--num-images', '6', '--batch-size', '4', '--num-layers', '3',
        '--out-dir',
        str(out)
    ])
    for name in ('spectral_intensity.png', 'channel_spectra.png'):
        assert (out / name).stat().st_size > 1000
        assert (out / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    saved = json.loads((out / 'spectral_analysis.json').read_text())
    assert report['snippet'] == saved['snippet']
    assert saved['data'] == 'photos' and saved['num_images'] == 6
    assert saved['input_shape'] == {'model': [3, 32, 32]}  # the test pipeline's CenterCrop
    res = saved['models']['model']
    n = 7 if kind == 'vit' else 4
    assert len(res['layers']) == len(res['intensity']) == len(res['channel_spectrum']) == n
    # Swin stages carry their own grid; ViT blocks need the patch_embed tap.
    assert (res['grid'] == 'backbone.patch_embed') == (kind == 'vit')

    # The same photo crops, cut by PIL, normalised here, through the model with our own hooks.
    bunch = load_sample_images()
    photos = {osp.basename(f): img for f, img in zip(bunch.filenames, bunch.images)}
    crops = [_pil_crop(photos[b['photo']], b, (32, 32)) for b in saved['inputs']]
    inputs = _normalise_rgb(np.stack(crops))
    intensity, channel = _spectra_by_hand(model, inputs, res['layers'], patch=8)
    # PIL and torch resample within a tenth of a grey level: close, not bit-equal.
    np.testing.assert_allclose(res['intensity'], intensity, rtol=1e-3)
    np.testing.assert_allclose(
        res['channel_spectrum'][-1], channel[-1].numpy(), rtol=1e-2, atol=1e-4)
    assert res['proposed'] == _top(intensity, 3) == _top(res['intensity'], 3)
    # With the tool's own crops the numbers agree to float precision.
    raw, boxes = _tool().sample_photo_crops(6, (3, 32, 32), seed=0)
    assert boxes == saved['inputs']
    exact, _ = _spectra_by_hand(
        model, _normalise_rgb(raw.flip(1).permute(0, 2, 3, 1)), res['layers'], patch=8)
    np.testing.assert_allclose(res['intensity'], exact, rtol=1e-4)


# ---------------------------------------------------------------------------- an image folder
def test_analysis_tool_on_an_image_folder(tmp_path):
    """Three files (PNG, JPEG, in a sub-folder too) through the config's test pipeline
    (LoadImageFromFile, ResizeEdge 32, CenterCrop 32), redone here with PIL and numpy."""
    from sklearn.datasets import load_sample_images
    china, flower = load_sample_images().images
    folder = tmp_path / 'images'
    (folder / 'sub').mkdir(parents=True)
    Image.fromarray(china[100:132, 200:248]).save(folder / 'a.png')  # 32 x 48: crop only
    Image.fromarray(flower[50:114, 300:396]).save(folder / 'sub' / 'b.png')  # 64 x 96: halved
    Image.fromarray(china[200:240, 400:432]).save(folder / 'c.jpg', quality=95)  # 40 x 32
    (folder / 'notes.txt').write_text('not an image')
    path = _tiny_config(tmp_path, 'vit')
    model = _saved_model(Config.fromfile(path).model, tmp_path / 'w.pth')
    out = tmp_path / 'out'
    tool = _tool()
    report = tool.main([
        path, '--data',
        str(folder), '--checkpoint',
        str(tmp_path / 'w.pth'), '--num-layers', '3', '--out-dir',
        str(out)
    ])
    assert report['inputs'] == [{'file': 'a.png'}, {'file': 'c.jpg'}, {'file': 'sub/b.png'}]
    assert report['num_images'] == 3 and report['input_shape'] == {'model': [3, 32, 32]}
    assert (out / 'spectral_intensity.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    def load(name):
        return np.asarray(Image.open(folder / name).convert('RGB')).astype(np.float64)

    b = load('sub/b.png')
    b = (b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2]) / 4  # bilinear at 1/2
    expected = [load('a.png')[:, 8:40], load('c.jpg')[4:36], b[:, 8:40]]  # centre 32 x 32
    images, _ = tool.folder_images(
        str(folder), tool.folder_pipeline(Config.fromfile(path), (3, 32, 32)), 10)
    for img, ref, tol in zip(images, expected, (0, 2, 1)):
        rgb = img.flip(0).permute(1, 2, 0).double().numpy()  # LoadImageFromFile gives BGR
        assert rgb.shape == (32, 32, 3) and np.abs(rgb - ref).max() <= tol
    res = report['models']['model']
    intensity, _ = _spectra_by_hand(
        model, _normalise_rgb(np.round(np.stack(expected))), res['layers'], patch=8)
    np.testing.assert_allclose(res['intensity'], intensity, rtol=1e-3)  # JPEG decoders differ
    assert res['proposed'] == _top(intensity, 3)


# ------------------------------------------------------------------ the config's validation set
def _samples(n, num_classes):
    from mmpretrain.structures import DataSample
    return [DataSample().set_gt_label(i % num_classes) for i in range(n)]


def test_analysis_tool_on_a_distillation_config(tmp_path, capsys):
    """The demo pair on its own validation set (the held-out digits through the config's test
    pipeline): both models analysed on the digits the report names, the printed snippet pastes into
    a working distiller."""
    from mmkd_ext.datasets.digits import DigitsDataset
    from mmkd_ext.utils.config import load_model_config
    teacher = _saved_model(load_model_config(TEACHER_CFG), tmp_path / 't.pth', seed=1)
    student = _saved_model(load_model_config(STUDENT_CFG), tmp_path / 's.pth', seed=2)
    out = tmp_path / 'out'
    report = _tool().main([
        KD_CFG, '--data', 'val', '--num-images', '20', '--batch-size', '8', '--teacher-checkpoint',
        str(tmp_path / 't.pth'), '--checkpoint',
        str(tmp_path / 's.pth'), '--num-layers', '2', '--out-dir',
        str(out)
    ])
    assert set(report['models']) == {'teacher', 'student'}
    assert report['input_shape'] == {'teacher': [1, 8, 8], 'student': [1, 8, 8]}
    idx = [d['index'] for d in report['inputs']]
    assert len(idx) == 20 and idx == sorted(set(idx)) and idx[-1] < 450
    # The digits at those indices, normalised here (the digits config: mean 78, std 96).
    digits = DigitsDataset(split='test', pipeline=[])
    inputs = torch.stack([torch.from_numpy(digits.get_data_info(i)['img']).float()
                          for i in idx])[:, None]
    inputs = (inputs - 78.0) / 96.0
    t_int, _ = _spectra_by_hand(teacher, inputs, report['models']['teacher']['layers'])
    s_int, _ = _spectra_by_hand(student, inputs, report['models']['student']['layers'])
    assert report['models']['teacher']['layers'] == [f'backbone.layer{i}' for i in range(1, 5)]
    np.testing.assert_allclose(report['models']['teacher']['intensity'], t_int, rtol=1e-4)
    np.testing.assert_allclose(report['models']['student']['intensity'], s_int, rtol=1e-4)
    # Equal depths: the teacher's two hottest stages pair with the student's same stages.
    assert report['models']['teacher']['proposed'] == _top(t_int, 2)
    assert report['models']['student']['proposed'] == _top(t_int, 2)
    assert report['models']['student']['hottest'] == _top(s_int, 2)
    assert 'SpectralKDLoss' in capsys.readouterr().out
    namespace = {}
    exec('method = ' + report['snippet'].rstrip(','), namespace)  # noqa: S102
    from mmkd_ext.distillers import Distiller
    init_default_scope('mmpretrain')
    d = Distiller(
        student=STUDENT_CFG,
        teacher=TEACHER_CFG,
        input_shape=(1, 8, 8),
        methods=[namespace['method']])
    assert torch.isfinite(d.loss(torch.randn(2, 1, 8, 8), _samples(2, 10))['loss_spectralkd'])


def test_bad_data_arguments_are_clear_errors(tmp_path, capsys):
    tool = _tool()
    with pytest.raises(SystemExit):
        tool.parse_args(['x.py', '--data', 'digits'])
    assert "'photos', 'val' or an existing image folder" in capsys.readouterr().err
    path = _tiny_config(tmp_path, 'vit', with_pipeline=False)
    with pytest.raises(ValueError, match='val_dataloader'):
        tool.main([path, '--data', 'val', '--out-dir', str(tmp_path / 'out')])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='No image file'):
        tool.main([path, '--data', str(tmp_path / 'empty'), '--out-dir', str(tmp_path / 'out')])


def test_pair_layers_gives_the_papers_cait_to_deit_pairing():
    from mmkd_ext.analysis.spectral import pair_layers

    # SpectralKD's CaiT-S24 (24 blocks) -> DeiT-T (12): teacher blocks 0, 1 and 18-23 are taught
    # to student blocks 0, 1 and 6-11 (configs/spectralkd, the paper's choice).
    teacher = [0, 1, 18, 19, 20, 21, 22, 23]
    assert pair_layers(teacher, 24, 12) == [(0, 0), (1, 1)] + [(s, s + 12) for s in range(6, 12)]
    # Same depth: identity; second-half layers count from the end; two teacher layers landing on
    # one student layer keep the first.
    assert pair_layers([2, 5], 6, 6) == [(2, 2), (5, 5)]
    assert pair_layers([0, 9], 10, 3) == [(0, 0), (2, 9)]
    assert pair_layers([1, 9], 10, 2) == [(1, 1)]  # 9 -> student 1, already taken by 1
    assert pair_layers([0, 3], 4, 2) == [(0, 0), (1, 3)]
