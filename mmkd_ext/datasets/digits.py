"""scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes) as an mmpretrain dataset.

The data ships inside scikit-learn, so the demo and the tests need no download.
"""
import numpy as np
from mmpretrain.datasets import BaseDataset

from mmkd_ext.registry import DATASETS


@DATASETS.register_module()
class DigitsDataset(BaseDataset):
    """The digits as grey-scale uint8 images of shape (8, 8), values 0..255.

    A fixed, stratified split (seeded, independent of the training seed): 1,347 train images and 450
    test images (25 %, as scikit-learn's default ``train_test_split``).

    Args:
        split: 'train' or 'test'.
        split_seed: seed of the split (keep the default to compare numbers).
        pipeline: the usual mmpretrain pipeline (e.g. ``[dict(type='PackInputs')]``).
    """
    METAINFO = {'classes': tuple(str(i) for i in range(10))}

    def __init__(self, split: str = 'train', split_seed: int = 0, **kwargs):
        if split not in ('train', 'test'):
            raise ValueError(f"DigitsDataset split must be 'train' or 'test', got {split!r}")
        self.split = split
        self.split_seed = split_seed
        kwargs.setdefault('ann_file', '')
        kwargs.setdefault('test_mode', split == 'test')
        super().__init__(**kwargs)

    def load_data_list(self):
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:
            raise ImportError('DigitsDataset needs scikit-learn: pip install scikit-learn') from e
        digits = load_digits()
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
        labels = digits.target.astype(np.int64)
        rng = np.random.RandomState(self.split_seed)
        test_idx = []
        for c in range(10):
            idx = np.flatnonzero(labels == c)
            rng.shuffle(idx)
            test_idx += idx[:int(round(len(idx) * 0.25))].tolist()
        in_test = np.zeros(len(labels), dtype=bool)
        in_test[test_idx] = True
        keep = np.flatnonzero(in_test if self.split == 'test' else ~in_test)
        return [dict(img=images[i], gt_label=int(labels[i]), sample_idx=int(i)) for i in keep]
