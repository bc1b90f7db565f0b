"""Generative blocks: rebuild teacher features from masked student features (ViTKD, MGD)."""
from .masked_generative_block import MaskedGenerativeBlock

__all__ = ['MaskedGenerativeBlock']
