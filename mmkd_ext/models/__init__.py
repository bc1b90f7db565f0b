"""Backbones that mmpretrain lacks and a method's published recipe needs (CaiT for SpectralKD)."""
from .backbones import CaiT, convert_timm_cait

__all__ = ['CaiT', 'convert_timm_cait']
