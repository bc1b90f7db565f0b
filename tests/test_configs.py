"""Every config in configs/ builds its models and trains one step on tiny data.

Configs are found by glob (a new folder is covered without editing this file). Those in a
``models/`` folder are model definitions (what distillation configs name as teacher or student):
each is built and takes one ``train_step``. Every other config must be runnable (``model``,
``train_dataloader``, ``train_cfg``, ``optim_wrapper``), be named after its recipe, and trains one
step with the real Runner, as written except that the test

- replaces image-file datasets (ImageNet) by two real photos (scikit-learn's sample images) in
  mmpretrain's folder layout, read through the config's own train and test pipelines at 64 px
  instead of 224 (the sizes in the transforms, the backbones' ``img_size`` and Swin windows, and
  the distiller's ``input_shape`` scaled alike), and slices the digits to two images;
- shrinks transformer widths about 12 times (depths, patch sizes and module paths are kept, so
  every tap exists) and swaps timm teachers for the smallest model of their family;
- drops the teacher checkpoint (no downloads) and stops after one step (one epoch of one batch),
  validation off; the config's optimizer, LR schedule, hooks (EMA...) and batch augments run;
- keeps TeacherCheckHook but without its expected accuracy (a random teacher would fail it): it
  still evaluates the teacher on the two validation images before the step.

The step must give finite loss terms (one per method), gradient to every trained parameter (as
DDP needs) and to the student, updated parameters, and leave the teacher untouched.
"""
import copy
import functools
import glob
import math
import os
import os.path as osp
import re
import time

import pytest
import torch
from conftest import ROOT
from mmengine.config import Config, ConfigDict
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.runner import Runner

import mmkd_ext  # noqa: F401
from mmkd_ext.utils.config import load_model_config

CONFIG_DIR = osp.join(ROOT, 'configs')
TRAIN_KEYS = ('model', 'train_dataloader', 'train_cfg', 'optim_wrapper')
FILE_DATASETS = ('ImageNet', 'ImageNet21k', 'CustomDataset')
# Datasets of in-memory arrays (CIFAR's pickles): replaced by the two photos like the file datasets,
# with a LoadImageFromFile put before their pipeline.
ARRAY_DATASETS = ('CIFAR10', 'CIFAR100')
IMG = 64  # side of the images that replace the file datasets' 224 px (sizes in pipelines, models)
SIZE_KEYS = ('scale', 'crop_size', 'size')  # image sizes in the transforms' arguments
# The smallest model of a timm family (same architecture type) for a teacher built by timm.
TIMM_TINY = {'regnety': 'regnety_002'}


def _all_configs():
    paths = glob.glob(osp.join(CONFIG_DIR, '**', '*.py'), recursive=True)
    return sorted(p for p in paths if '_base_' not in osp.relpath(p, CONFIG_DIR).split(os.sep))


def _in_models_folder(path):
    return osp.basename(osp.dirname(path)) == 'models'


ALL_CONFIGS = _all_configs()
RUNNABLE = [p for p in ALL_CONFIGS if not _in_models_folder(p)]
MODEL_DEFS = [p for p in ALL_CONFIGS if _in_models_folder(p)]
_rel = functools.partial(osp.relpath, start=CONFIG_DIR)


def test_configs_are_found():
    assert len(RUNNABLE) >= 10 and MODEL_DEFS, (RUNNABLE, MODEL_DEFS)
    for folder in ('demo', 'vitkd', 'kd', 'spectralkd'):
        assert any(_rel(p).startswith(folder + os.sep) for p in RUNNABLE), folder


@pytest.mark.parametrize('path', RUNNABLE, ids=_rel)
def test_config_name_matches_its_recipe(path):
    """A runnable config has what a training run needs, and its name's ``{gpus}xb{batch}-{epochs}e``
    is its recipe; a distillation config names its teacher's weights."""
    cfg = Config.fromfile(path)
    missing = [k for k in TRAIN_KEYS if cfg.get(k) is None]
    assert not missing, (f'{_rel(path)} lacks {missing}: a config outside a models/ folder must be '
                         f'runnable; model definitions go into a models/ folder')
    if is_segmentation_config(cfg):
        return check_segmentation_recipe(path, cfg)
    found = re.search(r'_(\d+)xb(\d+)-(\d+)e_', osp.basename(path))
    assert found, f'{_rel(path)}: name without _{{gpus}}xb{{batch}}-{{epochs}}e_'
    gpus, batch, epochs = map(int, found.groups())
    assert cfg.train_dataloader.batch_size == batch
    assert cfg.train_cfg.max_epochs == epochs
    if cfg.get('auto_scale_lr'):
        assert cfg.auto_scale_lr.base_batch_size == gpus * batch
    if cfg.model.type.split('.')[-1] == 'Distiller':
        assert cfg.model.teacher_checkpoint, 'a distillation config without teacher weights'


# ------------------------------------------------------------------------------- tiny data
@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    """Two real photos as a 2-class dataset in mmpretrain's folder layout (class/xxx.jpg)."""
    import cv2
    from sklearn.datasets import load_sample_images
    root = tmp_path_factory.mktemp('images')
    for i, img in enumerate(load_sample_images().images[:2]):
        os.makedirs(root / f'class_{i}')
        cv2.imwrite(str(root / f'class_{i}' / f'photo_{i}.jpg'), img[:, :, ::-1])  # RGB -> BGR
    return str(root)


def _scaled(value, factor):
    if isinstance(value, int) and not isinstance(value, bool):
        return max(1, round(value * factor))
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, int) for v in value):
        return type(value)(max(1, round(v * factor)) for v in value)
    return value


def tiny_dataset(dataset, image_folder, factor):
    """Two images in place of the config's dataset, read through its own pipeline (with the image
    sizes of its transforms scaled by ``factor`` for the file datasets)."""
    kind = dataset.type.split('.')[-1]
    if kind in FILE_DATASETS + ARRAY_DATASETS:
        pipeline = copy.deepcopy(dataset.pipeline)
        if kind in ARRAY_DATASETS:
            pipeline = [dict(type='LoadImageFromFile')] + list(pipeline)
        for t in pipeline:
            for key in SIZE_KEYS:
                if key in t:
                    t[key] = _scaled(t[key], factor)
        return dict(
            type='CustomDataset',
            data_root=image_folder,
            with_label=True,
            pipeline=pipeline,
            serialize_data=False)
    if kind == 'DigitsDataset':
        # (serialize_data=False: serialising two images calls gc.collect(), a second each here)
        return dict(dataset, indices=2, serialize_data=False)
    raise AssertionError(f'tests/test_configs.py does not know how to make tiny data for a '
                         f'{dataset.type} dataset: add it to tiny_dataset().')


def tiny_loader(loader, image_folder, factor):
    loader = copy.deepcopy(loader)
    loader.update(batch_size=2, num_workers=0, persistent_workers=False)
    loader['dataset'] = ConfigDict(tiny_dataset(loader.dataset, image_folder, factor))
    return loader


# ------------------------------------------------------------------------------- tiny models
def _width(dims):
    """A transformer width shrunk about 12 times (a multiple of 4, at least 16); small widths (the
    digits demo) are kept."""
    return dims if dims <= 64 else max(16, round(dims / 48) * 4)


def _arch(backbone):
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    arch = backbone.get('arch', 'base')
    if isinstance(arch, str):
        cls = ROOT_MODELS.get(backbone.type) or PRETRAIN_MODELS.get(backbone.type)
        arch = cls.arch_zoo[arch.lower()]
    return dict(arch)


def shrink(model, factor):
    """A narrow copy of a classifier config for images ``factor`` times the configured size: same
    types, depths, heads layout, patch sizes and tap paths; no pre-trained initialisation."""
    model = ConfigDict(copy.deepcopy(model))
    model.pop('init_cfg', None)
    if model.type.split('.')[-1] == 'TimmClassifier':
        family = model.model_name.split('_')[0]
        if family not in TIMM_TINY:
            raise AssertionError(f'No tiny timm model for {model.model_name}: add its family to '
                                 f'TIMM_TINY in tests/test_configs.py.')
        model.model_name = TIMM_TINY[family]
        return model
    bb = model.backbone
    bb.pop('init_cfg', None)
    kind = bb.type.split('.')[-1]
    if kind in ('VisionTransformer', 'DistilledVisionTransformer', 'DeiT3', 'CaiT'):
        arch = _arch(bb)
        width = _width(arch['embed_dims'])
        new = dict(embed_dims=width, num_layers=arch['num_layers'], num_heads=2)
        if kind == 'CaiT':
            new.update({k: arch[k] for k in ('init_values', 'num_cls_layers') if k in arch})
        else:
            new['feedforward_channels'] = 2 * width
        bb.arch = new
        model.head.in_channels = width
    elif kind == 'SwinTransformer':
        arch = _arch(bb)
        width = _width(arch['embed_dims'])
        bb.arch = dict(embed_dims=width, depths=arch['depths'], num_heads=[1, 2, 4, 8])
        model.head.in_channels = 8 * width
        # Windows scale with the image: the same number of windows in every stage.
        bb.window_size = _scaled(bb.get('window_size', 7), factor)
    elif kind in ('ResNet', 'ResNet_CIFAR') and bb.get('base_channels', 64) <= 32:
        return model  # the digits demo: already tiny
    elif kind in ('ResNet', 'ResNetV1c', 'ResNetV1d'):  # CNNs: narrower, no img_size
        bb.update(stem_channels=8, base_channels=8)
        model.head.in_channels = 8 * 2**(bb.get('num_stages', 4) - 1) * (4 if bb.depth >= 50 else 1)
        return model
    elif kind == 'MobileNetV1':
        bb.widen_factor = 0.125
        model.head.in_channels = 128
        return model
    elif kind == 'MobileNetV2':  # its last convolution keeps 1280 channels for widths <= 1
        bb.widen_factor = 0.25
        return model
    elif kind == 'ResMLP':  # img_size scaled below (the cross-patch layers fix the patch count)
        arch = _arch(bb)
        bb.arch = dict(embed_dims=_width(arch['embed_dims']), num_layers=arch['num_layers'])
        model.head.in_channels = bb.arch['embed_dims']
    elif kind == 'ConvNeXt':
        from mmpretrain.models.backbones import ConvNeXt
        arch = bb.get('arch', 'tiny')
        arch = dict(ConvNeXt.arch_settings[arch] if isinstance(arch, str) else arch)
        bb.arch = dict(depths=arch['depths'], channels=[_width(c) for c in arch['channels']])
        model.head.in_channels = bb.arch['channels'][-1]
        return model
    elif kind == 'MlpMixer':
        arch = _arch(bb)
        bb.arch = {k: (v if k == 'num_layers' else _width(v)) for k, v in arch.items()}
        model.head.in_channels = bb.arch['embed_dims']
    else:
        raise AssertionError(f'tests/test_configs.py cannot shrink a {bb.type} backbone: add a '
                             f'rule to shrink().')
    bb.img_size = _scaled(bb.get('img_size', 224), factor)  # mmpretrain's default is 224
    return model


def tiny_detection_config(cfg, work_dir):
    """An mmdet config (a detector, or a distiller of two) on a tiny COCO set written into
    ``work_dir`` (two images: one batch, the largest training size 128 px) with its detectors
    narrowed by ``shrink_detector`` (tests/detection_helpers.py); no teacher checkpoint."""
    from detection_helpers import shrink_detector, tiny_detection_data, write_tiny_coco
    coco = write_tiny_coco(osp.join(str(work_dir), 'coco'), num_images=2)
    factor = tiny_detection_data(cfg, coco)
    cfg.train_cfg.val_interval = 10**6
    # The one step is the first of mmdet's linear warm-up (LR x 0.001): on 16-channel maps MGD's
    # alpha (5e-7) then moves some parameters by less than float32 resolves. Start warm.
    for scheduler in cfg.get('param_scheduler', []):
        if scheduler.type.split('.')[-1] == 'LinearLR':
            scheduler.start_factor = 1.0
    m = cfg.model
    if m.type.split('.')[-1] == 'Distiller':
        m.student = shrink_detector(load_model_config(m.student), factor)
        m.teacher = shrink_detector(load_model_config(m.teacher), factor)
        m.teacher_checkpoint = None
        m.input_shape = (3, 128, 128)
    else:
        cfg.model = shrink_detector(m, factor)
    return cfg


def tiny_config(path, work_dir, image_folder):
    cfg = Config.fromfile(path)
    cfg.work_dir = str(work_dir)
    cfg.log_level = 'WARNING'
    cfg.experiment_name = f'test_{time.time_ns()}'
    cfg.randomness = dict(seed=0)
    cfg.load_from, cfg.resume = None, False
    if cfg.get('default_scope') == 'mmdet':
        return tiny_detection_config(cfg, work_dir)
    if is_segmentation_config(cfg):
        return tiny_segmentation_config(cfg, image_folder)
    m = cfg.model
    distiller = m.type.split('.')[-1] == 'Distiller'
    # File datasets (ImageNet): IMG-px images in place of the configured size (224).
    files = cfg.train_dataloader.dataset.type.split('.')[-1] in FILE_DATASETS + ARRAY_DATASETS
    size = (m.input_shape[-1]
            if distiller else m.get('backbone', {}).get('img_size', 224)) if files else None
    factor = IMG / (size if isinstance(size, int) else size[-1]) if files else 1.0
    cfg.train_dataloader = tiny_loader(cfg.train_dataloader, image_folder, factor)
    for split in ('val', 'test'):
        if cfg.get(f'{split}_dataloader') is not None:
            cfg[f'{split}_dataloader'] = tiny_loader(cfg[f'{split}_dataloader'], image_folder,
                                                     factor)
    # The schedule stays the config's (its LR schedulers are built for it); StepProbe stops the
    # loop after the first step, before any validation.
    cfg.train_cfg.val_interval = 10**6
    # The one step is the first of a linear warm-up from a tiny LR (OFA's SGD recipes: x 0.001):
    # BN scales (1.0) of a method's branches then move by less than float32 resolves. Start warm.
    schedulers = cfg.get('param_scheduler') or []
    # mmpretrain's step / cosine schedules are one dict, not a list
    for scheduler in [schedulers] if isinstance(schedulers, dict) else schedulers:
        if scheduler.type.split('.')[-1] == 'LinearLR' and scheduler.get('start_factor', 1) < 0.01:
            scheduler.start_factor = 1.0
    for hook in cfg.get('custom_hooks', []):
        if hook.type.split('.')[-1] == 'TeacherCheckHook':
            hook.expected_top1 = None  # a random teacher: evaluate, do not judge
    if distiller:
        m.student = shrink(load_model_config(m.student), factor)
        m.teacher = shrink(load_model_config(m.teacher), factor)
        m.teacher_checkpoint = None
        m.input_shape = tuple(m.input_shape[:-2]) + tuple(_scaled(list(m.input_shape[-2:]), factor))
        for method in m.methods:  # head counts set for the full widths need not divide the tiny
            method.pop('num_heads', None)  # ones: the method's default rule then applies
    else:
        cfg.model = shrink(m, factor)
    return cfg


# ------------------------------------------------------------------------------- segmentation
# mmseg configs (ADE20K, iteration-based): named `{gpus}xb{batch}-{iters}k_`; tiny data is an
# ADE20K-layout folder made from the two photos (label PNGs with reduce_zero_label semantics);
# segmentors are shrunk like the classifiers (widths, the crop size; depths and tap paths kept).
SEG_DATASETS = ('ADE20KDataset', )


def is_segmentation_config(cfg):
    """Whether ``cfg`` trains on a segmentation dataset (an mmseg segmentor or a distiller of
    them)."""
    return cfg.train_dataloader.dataset.type.split('.')[-1] in SEG_DATASETS


def check_segmentation_recipe(path, cfg):
    """``{gpus}xb{batch}-{iters}k_`` is the recipe of an iteration-based segmentation config."""
    found = re.search(r'_(\d+)xb(\d+)-(\d+)k_', osp.basename(path))
    assert found, f'{_rel(path)}: name without _{{gpus}}xb{{batch}}-{{iters}}k_'
    gpus, batch, kiters = map(int, found.groups())
    assert cfg.train_dataloader.batch_size == batch
    assert cfg.train_cfg.type.split('.')[-1] == 'IterBasedTrainLoop'
    assert cfg.train_cfg.max_iters == kiters * 1000
    if cfg.get('auto_scale_lr'):
        assert cfg.auto_scale_lr.base_batch_size == gpus * batch
    if cfg.model.type.split('.')[-1] == 'Distiller':
        assert cfg.model.teacher_checkpoint, 'a distillation config without teacher weights'


def tiny_ade20k(image_folder):
    """The two photos of ``image_folder`` as an ADE20K folder (images/ and annotations/, training
    and validation): 96x64 JPEGs and PNG labels of their brightness bands (1..4; 0 is ADE20K's
    'other', ignored by reduce_zero_label). Written once, beside ``image_folder``."""
    import cv2
    root = image_folder.rstrip(os.sep) + '_ade20k'
    if osp.isdir(root):
        return root
    photos = sorted(glob.glob(osp.join(image_folder, '*', '*.jpg')))
    for split in ('training', 'validation'):
        os.makedirs(osp.join(root, 'images', split))
        os.makedirs(osp.join(root, 'annotations', split))
        for i, photo in enumerate(photos):
            img = cv2.resize(cv2.imread(photo), (96, 64), interpolation=cv2.INTER_AREA)
            label = 1 + cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) // 64
            label[:4] = 0  # a band of 'other' pixels
            cv2.imwrite(osp.join(root, 'images', split, f'photo_{i}.jpg'), img)
            cv2.imwrite(osp.join(root, 'annotations', split, f'photo_{i}.png'), label)
    return root


def shrink_segmentor(model, factor):
    """A narrow copy of an mmseg segmentor config for images ``factor`` times the crop size: the
    same backbone type and depth (mmseg's or mmpretrain's ResNet, Swin, ViT), neck and heads,
    their widths cut and their inputs rewired; no pre-trained initialisation."""
    model = ConfigDict(copy.deepcopy(model))
    model.pop('init_cfg', None)
    model.pretrained = None
    bb = model.backbone
    bb.pop('init_cfg', None)
    kind = bb.type.split('.')[-1]
    if kind in ('ResNet', 'ResNetV1c', 'ResNetV1d'):
        bb.update(stem_channels=8, base_channels=8)
        widths = [8 * (4 if bb.depth >= 50 else 1) * 2**i for i in range(4)]
    elif kind == 'SwinTransformer':
        if 'embed_dims' in bb:  # mmseg's Swin
            width = _width(bb.embed_dims)
            bb.update(embed_dims=width, num_heads=[1, 2, 4, 8])
        else:  # mmpretrain's
            arch = _arch(bb)
            width = _width(arch['embed_dims'])
            bb.arch = dict(embed_dims=width, depths=arch['depths'], num_heads=[1, 2, 4, 8])
        bb.window_size = 2  # several windows on the tiny stages (16x16 to 2x2 tokens at 64 px)
        widths = [width * 2**i for i in range(4)]
    elif kind == 'VisionTransformer':
        if 'embed_dims' in bb:  # mmseg's ViT
            width = _width(bb.embed_dims)
            bb.update(embed_dims=width, num_heads=2)
        else:  # mmpretrain's
            arch = _arch(bb)
            width = _width(arch['embed_dims'])
            bb.arch = dict(
                embed_dims=width,
                num_layers=arch['num_layers'],
                num_heads=2,
                feedforward_channels=2 * width)
        bb.img_size = _scaled(bb.get('img_size', 224), factor)
        widths = [width] * 4
    else:
        raise AssertionError(f'tests/test_configs.py cannot shrink a {bb.type} segmentation '
                             f'backbone: add a rule to shrink_segmentor().')
    neck = model.get('neck')
    if neck is not None:
        neck.update(in_channels=widths, out_channels=widths[0])
        widths = [widths[0]] * len(neck.get('scales', widths))
    model.decode_head.update(
        in_channels=[widths[i] for i in model.decode_head.in_index], channels=16)
    aux = model.get('auxiliary_head')
    for head in (aux if isinstance(aux, list) else [aux] if aux else []):
        head.update(in_channels=widths[head.in_index], channels=16)
    if model.get('data_preprocessor', {}).get('size'):
        model.data_preprocessor.size = _scaled(tuple(model.data_preprocessor.size), factor)
    return model


def tiny_segmentation_config(cfg, image_folder):
    """``tiny_config`` for a segmentation config: the tiny ADE20K folder through the config's own
    pipelines with their sizes scaled to IMG-px crops, shrunk segmentors, the teacher without its
    checkpoint; the first step only."""
    crops = [t.crop_size for t in cfg.train_dataloader.dataset.pipeline if 'crop_size' in t]
    factor = IMG / crops[0][-1]
    root = tiny_ade20k(image_folder)
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if loader is None:
            continue
        loader = copy.deepcopy(loader)
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        loader.dataset.update(data_root=root, serialize_data=False)
        for t in loader.dataset.pipeline:
            for key in SIZE_KEYS:
                if key in t:
                    t[key] = _scaled(t[key], factor)
        cfg[f'{split}_dataloader'] = loader
    cfg.train_cfg.val_interval = 10**6
    for hook in cfg.get('custom_hooks', []):
        if hook.type.split('.')[-1] == 'TeacherCheckHook':
            hook.expected_top1 = None  # a random teacher: evaluate, do not judge
    for scheduler in cfg.get('param_scheduler', []):
        # mmseg's transformer recipes warm up from 1e-6 of the LR: a first step that small moves
        # no float32 weight, and the test checks that the step moves them.
        if scheduler.type == 'LinearLR':
            scheduler.start_factor = 1.0
    if cfg.get('data_preprocessor', {}).get('size'):
        cfg.data_preprocessor.size = _scaled(tuple(cfg.data_preprocessor.size), factor)
    m = cfg.model
    if m.type.split('.')[-1] == 'Distiller':
        m.student = shrink_segmentor(load_model_config(m.student), factor)
        m.teacher = shrink_segmentor(load_model_config(m.teacher), factor)
        m.teacher_checkpoint = None
        m.input_shape = tuple(m.input_shape[:-2]) + tuple(_scaled(list(m.input_shape[-2:]), factor))
    else:
        cfg.model = shrink_segmentor(m, factor)
    return cfg


# ------------------------------------------------------------------------------- the step
class StepProbe(Hook):
    """Records, around the one training step: the log, the gradients reaching the student and the
    methods, and their parameters and the teacher's state before and after."""
    priority = 'LOWEST'

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self.model = model
        self.trained = dict(model.student.named_parameters(prefix='student')) \
            if hasattr(model, 'teacher') else dict(model.named_parameters())
        if hasattr(model, 'methods'):
            self.trained.update(model.methods.named_parameters(prefix='methods'))
        self.trained = {k: p for k, p in self.trained.items() if p.requires_grad}
        self.before = {k: p.detach().clone() for k, p in self.trained.items()}
        self.grads = {}
        self.handles = [p.register_hook(self._grad_hook(k)) for k, p in self.trained.items()]
        teacher = getattr(model, 'teacher', None)
        self.teacher_before = None if teacher is None else {
            k: v.clone()
            for k, v in teacher.state_dict().items()
        }

    def _grad_hook(self, name):

        def hook(grad):
            self.grads[name] = grad.detach().clone()

        return hook

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        for h in self.handles:
            h.remove()
        self.outputs = {k: float(torch.as_tensor(v).detach()) for k, v in outputs.items()}
        self.changed = {k for k, p in self.trained.items() if not torch.equal(p, self.before[k])}
        runner.train_loop.stop_training = True  # one step (the epoch of two images is one batch)


@pytest.fixture
def fast_config_text(monkeypatch):
    """The Runner formats the whole config with yapf three to five times (log, dump, checkpoint
    meta), seconds each: the text is not what is tested here."""
    monkeypatch.setattr(Config, 'pretty_text',
                        property(lambda self: '# not formatted in tests/test_configs.py\n'))


@pytest.mark.parametrize('path', RUNNABLE, ids=_rel)
def test_config_trains_one_step(path, tmp_path, image_folder, fast_config_text):
    cfg = tiny_config(path, tmp_path, image_folder)
    runner = Runner.from_cfg(cfg)
    probe = StepProbe()
    runner.register_hook(probe)
    runner.train()
    assert runner.iter == 1
    model, log = probe.model, probe.outputs
    # Finite loss terms, one or more per method.
    assert 'loss' in log and all(math.isfinite(v) for v in log.values()), log
    for method in getattr(model, 'methods', []):
        assert any(k.startswith(f'loss_{method.name}') for k in log), (method.name, list(log))
    # Every trained parameter (student's and methods') takes part in the loss, as DDP requires
    # unless the config sets find_unused_parameters; gradients are finite, not all zero, and the
    # step moved every parameter that had one.
    if not cfg.get('model_wrapper_cfg', {}).get('find_unused_parameters', False):
        unused = sorted(set(probe.trained) - set(probe.grads))
        assert not unused, f'parameters outside the loss (DDP fails on them): {unused}'
    assert all(torch.isfinite(g).all() for g in probe.grads.values())
    nonzero = {k for k, g in probe.grads.items() if g.abs().sum() > 0}
    assert any(not k.startswith('methods.') for k in nonzero), 'no gradient reached the student'
    if any(k.startswith('methods.') for k in probe.trained):
        assert any(k.startswith('methods.') for k in nonzero), 'no gradient in the methods'
    assert nonzero <= probe.changed, f'not updated despite gradient: {nonzero - probe.changed}'
    # The teacher (weights and BN statistics) is untouched and gets no gradient.
    teacher = getattr(model, 'teacher', None)
    if teacher is not None:
        assert not any(p.requires_grad or p.grad is not None for p in teacher.parameters())
        after = teacher.state_dict()
        for k, v in probe.teacher_before.items():
            assert torch.equal(v, after[k]), f'teacher entry {k} changed'
    # TeacherCheckHook, where the config has one, evaluated the teacher before the step (its value
    # is not compared with anything: a random teacher's scores tie, and top-1 then depends on how
    # the metric breaks ties).
    for hook in runner.hooks:
        if type(hook).__name__ == 'TeacherCheckHook':
            assert isinstance(hook.result, float), 'TeacherCheckHook did not evaluate the teacher'


# ------------------------------------------------------------------------------- models/ folders
@pytest.mark.parametrize('path', MODEL_DEFS, ids=_rel)
def test_model_definition_builds_and_trains_one_step(path):
    """A model definition (what distillation configs name as teacher or student) builds, shrunk
    like the others, and one ``train_step`` with its config's optimizer (AdamW where it has
    none) gives a finite loss and moves its parameters."""
    from mmengine.optim import build_optim_wrapper
    from mmpretrain.structures import DataSample

    from mmkd_ext.distillers.builder import build_model
    cfg = Config.fromfile(path)
    size = cfg.model.get('backbone', {}).get('img_size', 224)
    model = build_model(shrink(load_model_config(path), IMG / size))
    optim = build_optim_wrapper(
        model,
        cfg.get('optim_wrapper') or dict(optimizer=dict(type='AdamW', lr=1e-3)))
    data = dict(
        inputs=[torch.randint(0, 256, (3, IMG, IMG), dtype=torch.uint8) for _ in range(2)],
        data_samples=[DataSample().set_gt_label(i) for i in range(2)])
    before = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    model.train()
    log = model.train_step(data, optim)
    assert log and all(math.isfinite(float(torch.as_tensor(v).detach())) for v in log.values()), log
    after = dict(model.named_parameters())
    assert any(not torch.equal(v, after[k]) for k, v in before.items())
