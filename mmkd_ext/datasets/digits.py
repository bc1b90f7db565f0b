"""scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes), an mmpretrain dataset.

The data ships inside scikit-learn, so the demo and the tests need no download.
"""
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from mmpretrain.datasets import BaseDataset

from mmkd_ext.registry import DATASETS


def stratified_counts(class_sizes: np.ndarray, total: int) -> np.ndarray:
    """How many images of each class a stratified subset of ``total`` images takes.

    Proportional to the class sizes, rounded by the largest remainder (ties: the lower class) so
    that the counts add up to ``total`` exactly.

    Args:
        class_sizes (np.ndarray): images per class, shape (K,).
        total (int): size of the subset, at most ``class_sizes.sum()``.

    Returns:
        np.ndarray: int64 counts, shape (K,), each within 1 of ``total * size / class_sizes.sum()``.
    """
    exact = class_sizes * total / class_sizes.sum()
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind='stable')
    counts[order[:total - counts.sum()]] += 1
    return counts


def upscale(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize (half-pixel centres, as ``cv2.INTER_LINEAR`` and PIL's BILINEAR upscaling).

    Args:
        images (np.ndarray): float images, shape (N, h, w).
        size (int): output side.

    Returns:
        np.ndarray: float32 images, shape (N, size, size).
    """
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
    return F.interpolate(x, size=(size, size), mode='bilinear', align_corners=False)[:, 0].numpy()


@DATASETS.register_module()
class DigitsDataset(BaseDataset):
    """The digits as grey-scale uint8 images of shape (img_size, img_size), values 0..255.

    A fixed, stratified split (seeded, independent of the training seed): 1,347 train images and 450
    test images (25 %, as scikit-learn's default ``train_test_split``).

    The labelled-subset setting of distillation (a student that sees few labelled images, a
    teacher that saw them all) takes ``subset_size`` train images, stratified by class (counts
    proportional to the class sizes of the train split, about 30 a class for 300), drawn with
    ``subset_seed``: the same images for every training seed. The images keep their order in the
    train split. Each item's ``digit_index`` is its index in ``sklearn.datasets.load_digits()``
    (``sample_idx`` is its position in this dataset, as in every MMEngine dataset).

    Args:
        split (str): 'train' or 'test'. Defaults to 'train'.
        split_seed (int): seed of the train/test split (keep the default to compare numbers).
            Defaults to 0.
        subset_size (int, optional): keep only this many train images (10 to 1,347). None keeps
            all. Defaults to None.
        subset_seed (int): seed that draws the subset. Defaults to 0.
        img_size (int): side of the images: the 8x8 originals are upscaled by bilinear
            interpolation (of the 0..255 values, then rounded) when larger than 8. Defaults to 8.
        **kwargs: the usual :class:`mmpretrain.datasets.BaseDataset` arguments
            (``pipeline``, ``indices``, ...).
    """
    METAINFO = {'classes': tuple(str(i) for i in range(10))}

    def __init__(self,
                 split: str = 'train',
                 split_seed: int = 0,
                 subset_size: Optional[int] = None,
                 subset_seed: int = 0,
                 img_size: int = 8,
                 **kwargs):
        if split not in ('train', 'test'):
            raise ValueError(f"DigitsDataset split must be 'train' or 'test', got {split!r}")
        if subset_size is not None:
            if split != 'train':
                raise ValueError('DigitsDataset subset_size selects labelled train images; the '
                                 f'test split is always whole (got subset_size={subset_size} '
                                 "with split='test').")
            if isinstance(subset_size, bool) or not isinstance(subset_size, int) \
                    or subset_size < 10:
                raise ValueError('DigitsDataset subset_size must be an int >= 10 (one image a '
                                 f'class at least) or None, got {subset_size!r}.')
        if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 8:
            raise ValueError('DigitsDataset img_size must be an int >= 8 (the originals are 8x8 '
                             f'and are only upscaled), got {img_size!r}.')
        self.split = split
        self.split_seed = split_seed
        self.subset_size = subset_size
        self.subset_seed = subset_seed
        self.img_size = img_size
        kwargs.setdefault('ann_file', '')
        kwargs.setdefault('test_mode', split == 'test')
        super().__init__(**kwargs)

    def load_data_list(self):
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:
            raise ImportError('DigitsDataset needs scikit-learn: pip install scikit-learn') from e
        digits = load_digits()
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
        if self.subset_size is not None:
            keep = self._subset(keep, labels)
        images = digits.images[keep] * (255.0 / 16.0)
        if self.img_size != images.shape[-1]:
            images = upscale(images, self.img_size)
        images = np.round(images).astype(np.uint8)
        return [
            dict(img=img, gt_label=int(labels[i]), digit_index=int(i))
            for img, i in zip(images, keep)
        ]

    def _subset(self, keep: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Indices of the stratified labelled subset of the train images ``keep``, sorted."""
        if self.subset_size > len(keep):
            raise ValueError(f'DigitsDataset subset_size={self.subset_size} is larger than the '
                             f'train split ({len(keep)} images).')
        sizes = np.array([(labels[keep] == c).sum() for c in range(10)])
        rng = np.random.RandomState(self.subset_seed)
        chosen = []
        for c, n in enumerate(stratified_counts(sizes, self.subset_size)):
            idx = keep[labels[keep] == c]
            chosen.append(idx[rng.permutation(len(idx))[:n]])
        return np.sort(np.concatenate(chosen))
