"""Tiny COCO-format data and tiny detectors for tests of the detection configs (CPU, seconds).

- :func:`write_tiny_coco` draws a few images of filled shapes (rectangles, triangles, octagons)
  whose instance masks are exactly their polygons, and writes a COCO instances json with the 80
  COCO category names (so mmdet's ``CocoDataset`` and ``CocoMetric`` take it as COCO).
- :func:`tiny_detection_data` points a config's datasets and evaluators at that set and scales
  the image sizes of its pipelines and batch augments.
- :func:`shrink_detector` narrows an mmdet detector config (backbone, FPN, heads), keeping its
  types, depths and module paths.
"""
import copy
import json
import os
import os.path as osp

import numpy as np

SIZE_KEYS = ('scale', 'crop_size', 'size')  # image sizes in transforms and batch augments
CHANNEL_KEYS = ('in_channels', 'out_channels', 'feat_channels', 'conv_out_channels',
                'fc_out_channels')
NECK_WIDTH = 16  # FPN / head width of a shrunk detector (256 in the configs)
FC_WIDTH = 32  # box head FC width (1024 in the configs)


def _polygon(kind, cx, cy, r):
    if kind == 'rectangle':
        pts = [(cx - r, cy - 0.7 * r), (cx + r, cy - 0.7 * r), (cx + r, cy + 0.7 * r),
               (cx - r, cy + 0.7 * r)]
    elif kind == 'triangle':
        pts = [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    else:  # octagon
        pts = [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in np.arange(8) * np.pi / 4]
    return np.round(np.array(pts)).astype(np.int32)


def write_tiny_coco(root, num_images=4, size=(128, 96), seed=0):
    """Write ``num_images`` images (``size`` = (w, h)) with 1-3 shapes each, and their json.

    Layout: ``root/images/img_{i}.jpg`` and ``root/annotations/instances.json``. Categories are
    the 80 COCO classes (ids 1..80); shapes use 'person' (rectangles), 'car' (triangles) and
    'dog' (octagons). Each annotation's ``segmentation`` is the shape's polygon and its ``bbox``
    the polygon's extent.

    Returns:
        dict: ``data_root``, ``ann_file`` (relative to data_root), ``img_prefix``, ``json`` (the
        absolute json path), ``annotations`` (the written dict).
    """
    import cv2
    from mmdet.datasets import CocoDataset
    rng = np.random.RandomState(seed)
    names = CocoDataset.METAINFO['classes']
    categories = [dict(id=i + 1, name=n) for i, n in enumerate(names)]
    shape_cat = {
        'rectangle': names.index('person') + 1,
        'triangle': names.index('car') + 1,
        'octagon': names.index('dog') + 1
    }
    os.makedirs(osp.join(root, 'images'), exist_ok=True)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    w, h = size
    images, annotations = [], []
    for i in range(num_images):
        img = rng.randint(150, 230, (h, w, 3)).astype(np.uint8)
        for j in range(1 + i % 3):
            kind = list(shape_cat)[(i + j) % 3]
            r = int(rng.randint(min(w, h) // 8, min(w, h) // 4))
            cx = int(rng.randint(r + 1, w - r - 1))
            cy = int(rng.randint(r + 1, h - r - 1))
            pts = _polygon(kind, cx, cy, r)
            color = [int(c) for c in rng.randint(0, 120, 3)]
            cv2.fillPoly(img, [pts], color)
            x0, y0 = pts.min(0)
            x1, y1 = pts.max(0)
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=i + 1,
                    category_id=shape_cat[kind],
                    segmentation=[pts.reshape(-1).astype(float).tolist()],
                    area=float(cv2.contourArea(pts.astype(np.float32))),
                    bbox=[float(x0), float(y0),
                          float(x1 - x0), float(y1 - y0)],
                    iscrowd=0))
        file_name = f'img_{i}.jpg'
        cv2.imwrite(osp.join(root, 'images', file_name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append(dict(id=i + 1, file_name=file_name, width=w, height=h))
    data = dict(images=images, annotations=annotations, categories=categories)
    path = osp.join(root, 'annotations', 'instances.json')
    with open(path, 'w') as f:
        json.dump(data, f)
    return dict(
        data_root=str(root),
        ann_file='annotations/instances.json',
        img_prefix='images/',
        json=path,
        annotations=data)


def _scaled(value, factor):
    if isinstance(value, int) and not isinstance(value, bool):
        return max(1, round(value * factor))
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, int) for v in value):
        return type(value)(max(1, round(v * factor)) for v in value)
    return value


def _scale_sizes(transforms, factor):
    for t in transforms or []:
        for key in SIZE_KEYS:
            if key in t:
                t[key] = _scaled(t[key], factor)


def _largest_size(pipeline):
    sizes = [
        max(t[k]) if isinstance(t[k], (tuple, list)) else t[k] for t in pipeline for k in SIZE_KEYS
        if k in t and isinstance(t[k], (int, tuple, list))
    ]
    return max(sizes) if sizes else None


def _tiny_dataset(dataset, coco, factor):
    dataset = copy.deepcopy(dataset)
    while dataset.type.split('.')[-1] in ('RepeatDataset', 'ClassBalancedDataset'):
        dataset = dataset.dataset
    if dataset.type.split('.')[-1] != 'CocoDataset':
        raise AssertionError(f'tests/detection_helpers.py makes tiny data for CocoDataset only, '
                             f'not {dataset.type}.')
    dataset.update(
        data_root=coco['data_root'],
        ann_file=coco['ann_file'],
        data_prefix=dict(img=coco['img_prefix']),
        serialize_data=False)
    dataset.pop('indices', None)
    if dataset.get('filter_cfg'):
        dataset.filter_cfg['min_size'] = 1
    _scale_sizes(dataset.pipeline, factor)
    return dataset


def tiny_detection_data(cfg, coco, image_side=128):
    """Point ``cfg``'s loaders and evaluators at the tiny COCO set ``coco`` (from
    :func:`write_tiny_coco`), batch 2 without workers, with every image size of the pipelines and
    of the preprocessor's batch augments scaled so the largest training size is ``image_side``.

    Returns:
        float: the scale factor applied to the sizes (for the models' ``img_size``).
    """
    largest = _largest_size(_tiny_pipeline(cfg.train_dataloader.dataset)) or image_side
    factor = image_side / largest
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if loader is None:
            continue
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        loader.dataset = _tiny_dataset(loader.dataset, coco, factor)
        evaluator = cfg.get(f'{split}_evaluator')
        if evaluator is not None:
            evaluator.ann_file = coco['json']
    model = cfg.model
    for pre in (model.get('data_preprocessor'), cfg.get('data_preprocessor')):
        if pre is not None:
            _scale_sizes(pre.get('batch_augments'), factor)
    return factor


def _tiny_pipeline(dataset):
    while 'pipeline' not in dataset and 'dataset' in dataset:
        dataset = dataset.dataset
    return dataset.pipeline


def _narrow(value):
    if isinstance(value, int) and value >= 64:
        return FC_WIDTH if value >= 1024 else NECK_WIDTH
    return value


def _narrow_heads(cfg):
    """Every channel count of 64 or more in necks and heads -> NECK_WIDTH (FC_WIDTH for 1024)."""
    if isinstance(cfg, dict):
        for key, value in cfg.items():
            if key in CHANNEL_KEYS and not isinstance(value, (list, tuple)):
                cfg[key] = _narrow(value)
            else:
                _narrow_heads(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            _narrow_heads(value)


def shrink_detector(model, factor=1.0):
    """A narrow copy of an mmdet detector config for images ``factor`` times the configured size.

    Backbones keep their type, depth and module paths: mmdet/mmpretrain ResNets (and ResNet-D)
    get stem and base width 8;
    Swin transformers (mmdet's or mmpretrain's) width 16; mmpretrain ViTs width 32 with two heads
    and ``img_size`` scaled. The neck and the heads get width 16 (box FCs 32). Pre-trained
    initialisation is dropped (no downloads, no student file).
    """
    from mmengine.config import ConfigDict
    model = ConfigDict(copy.deepcopy(model))
    bb = model.backbone
    bb.pop('init_cfg', None)
    kind = bb.type.split('.')[-1]
    if kind in ('ResNet', 'ResNetV1d'):
        bb.update(base_channels=8, stem_channels=8)
        expansion = 4 if bb.depth >= 50 else 1
        widths = [8 * expansion * 2**i for i in range(4)]
    elif kind == 'SwinTransformer':
        if bb.type.startswith('mmpretrain.'):
            bb.arch = dict(embed_dims=16, depths=[2, 2, 6, 2], num_heads=[1, 2, 4, 8])
        else:
            bb.update(embed_dims=16, num_heads=[1, 2, 4, 8])
        widths = [16 * 2**i for i in range(4)]
    elif kind == 'VisionTransformer':
        bb.arch = dict(embed_dims=32, num_layers=12, num_heads=2, feedforward_channels=64)
        bb.img_size = _scaled(bb.get('img_size', 224), factor)
        widths = 32
    else:
        raise AssertionError(f'tests/detection_helpers.py cannot shrink a {bb.type} backbone: '
                             f'add a rule to shrink_detector().')
    neck = model.neck
    _narrow_heads(model)
    neck.in_channels = widths
    return model
