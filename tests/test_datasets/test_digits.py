"""DigitsDataset: the fixed split, the labelled subset and the upscaled images."""
import glob
import os.path as osp
import random
import re

import numpy as np
import pytest
import torch
from conftest import ROOT
from mmengine.config import Config
from PIL import Image
from sklearn.datasets import load_digits

from mmkd_ext.datasets import DigitsDataset

DIGITS = load_digits()


def sample_ids(ds):
    return np.array([ds.get_data_info(i)['digit_index'] for i in range(len(ds))])


def test_split_is_fixed_disjoint_and_stratified():
    train, test = DigitsDataset('train'), DigitsDataset('test')
    assert (len(train), len(test)) == (1347, 450)
    tr, te = sample_ids(train), sample_ids(test)
    assert not set(tr) & set(te) and len(set(tr) | set(te)) == 1797
    for c in range(10):  # 25 % of every class is held out
        assert (DIGITS.target[te] == c).sum() == round((DIGITS.target == c).sum() * 0.25)
    info = train.get_data_info(5)
    i = info['digit_index']
    assert info['img'].dtype == np.uint8 and info['img'].shape == (8, 8)
    np.testing.assert_array_equal(info['img'], np.round(DIGITS.images[i] * 255 / 16))
    assert info['gt_label'] == DIGITS.target[i]


def test_subset_is_stratified_and_independent_of_the_training_seed():
    ids = []
    for seed in (0, 1, 123):  # what the Runner's randomness=dict(seed=...) seeds
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        ids.append(sample_ids(DigitsDataset('train', subset_size=300)))
    assert all(np.array_equal(ids[0], other) for other in ids[1:])
    sub = ids[0]
    full = sample_ids(DigitsDataset('train'))
    assert len(sub) == len(set(sub)) == 300 and set(sub) <= set(full)
    assert np.all(np.diff(sub) > 0)  # the train split's order is kept
    for c in range(10):
        share = 300 * (DIGITS.target[full] == c).sum() / len(full)
        assert abs((DIGITS.target[sub] == c).sum() - share) < 1
    # Another subset seed draws other images (same class counts).
    other = sample_ids(DigitsDataset('train', subset_size=300, subset_seed=1))
    assert len(set(other) ^ set(sub)) > 100
    assert np.array_equal(np.bincount(DIGITS.target[other]), np.bincount(DIGITS.target[sub]))
    # A subset's images are the full split's images.
    ds = DigitsDataset('train', subset_size=300)
    first = ds.get_data_info(0)
    np.testing.assert_array_equal(first['img'],
                                  np.round(DIGITS.images[first['digit_index']] * 255 / 16))


@pytest.mark.parametrize('size', [16, 12, 32])
def test_upscale_equals_pil_bilinear(size):
    ds = DigitsDataset('test', img_size=size)
    for i in (0, 7, 449):
        info = ds.get_data_info(i)
        assert info['img'].shape == (size, size) and info['img'].dtype == np.uint8
        src = (DIGITS.images[info['digit_index']] * 255 / 16).astype(np.float32)
        ref = np.asarray(Image.fromarray(src, mode='F').resize((size, size), Image.BILINEAR))
        diff = np.abs(info['img'].astype(np.float64) - np.round(ref))
        # Factor 2 and 4 weights are exact binary fractions: equal; 12 may round 0.5 apart.
        assert diff.max() == 0 if size % 8 == 0 else diff.max() <= 1
        assert abs(info['img'].mean() - src.mean()) < 2  # a resize keeps the brightness


def test_bad_arguments_say_what_is_allowed():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        DigitsDataset('val')
    with pytest.raises(ValueError, match='test split is always whole'):
        DigitsDataset('test', subset_size=100)
    with pytest.raises(ValueError, match='larger than the train split'):
        DigitsDataset('train', subset_size=2000)
    with pytest.raises(ValueError, match='int >= 10'):
        DigitsDataset('train', subset_size=5)
    with pytest.raises(ValueError, match='img_size must be an int >= 8'):
        DigitsDataset('train', img_size=4)


DEMO_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'demo', '*.py')))


@pytest.mark.parametrize('path', DEMO_CONFIGS, ids=osp.basename)
def test_demo_config_names_state_their_data(path):
    """`..._digits-300.py` trains on 300 labelled images, `..._digits.py` on all 1,347,
    `..._digits-16px.py` on images upscaled to 16x16; the model is built for that side."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    from mmkd_ext.utils.config import load_model_config
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(path)
    match = re.search(r'_digits(?:-(\d+))?(?:-(\d+)px)?\.py$', path)
    assert match, 'demo configs are named ..._digits[-N][-Spx].py'
    side = int(match.group(2) or 8)
    train = DATASETS.build(cfg.train_dataloader.dataset)
    assert len(train) == int(match.group(1) or 1347)
    test = DATASETS.build(cfg.test_dataloader.dataset)
    assert len(test) == 450
    for ds in (train, test):
        assert ds[0]['inputs'].shape == (1, side, side)
    model = cfg.model
    models = [model]
    if model.type == 'mmkd_ext.Distiller':
        assert tuple(model.input_shape) == (1, side, side)
        models = [load_model_config(model[role]) for role in ('student', 'teacher')]
    for m in models:
        assert m.backbone.get('img_size', side) == side
