"""Backbones that mmpretrain lacks and a method's published recipe needs (CaiT for SpectralKD)."""
from .backbones import CaiT, convert_timm_cait
from .heads import TrainableDeiTClsHead  # noqa: F401  (DeiT's distillation token, trainable)
from .necks import SimpleFeaturePyramid  # noqa: F401  (plain ViTs in mmdet detectors)

__all__ = ['CaiT', 'convert_timm_cait']
