"""Backbones that mmpretrain lacks and a method's published recipe needs (CaiT for SpectralKD)."""
from .backbones import CaiT, convert_timm_cait
from .heads import TrainableDeiTClsHead  # noqa: F401  (DeiT's distillation token, trainable)

__all__ = ['CaiT', 'convert_timm_cait']
