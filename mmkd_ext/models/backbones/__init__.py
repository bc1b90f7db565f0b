from .cait import CaiT, convert_timm_cait

__all__ = ['CaiT', 'convert_timm_cait']
