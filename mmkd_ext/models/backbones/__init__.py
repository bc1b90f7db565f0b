from .cait import CaiT, convert_timm_cait
from .deit3 import DeiT3, convert_timm_deit3
from .mobilenet_v1 import MobileNetV1, convert_timm_mobilenet_v1
from .resmlp import ResMLP, convert_timm_resmlp

__all__ = [
    'CaiT', 'convert_timm_cait', 'DeiT3', 'convert_timm_deit3', 'MobileNetV1',
    'convert_timm_mobilenet_v1', 'ResMLP', 'convert_timm_resmlp'
]
