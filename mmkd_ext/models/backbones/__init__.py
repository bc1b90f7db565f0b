from .cait import CaiT, convert_timm_cait
from .deit3 import DeiT3, convert_timm_deit3

__all__ = ['CaiT', 'convert_timm_cait', 'DeiT3', 'convert_timm_deit3']
