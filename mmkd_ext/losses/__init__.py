from .base import DistillLoss
from .dkd import DKDLoss
from .fitnet import FitNetLoss
from .hard_kd import DeiTDistillationLoss, HardKDLoss
from .kd import KDLoss
from .mgd import MGDLoss
from .nkd import NKDLoss
from .ofa import OFALoss
from .pat import HierarchicalContextLoss, PATLoss
from .scalekd import DualViewMimicLoss, ScaleKDLoss
from .spectralkd import SpectralKDLoss
from .vitkd import ViTKDLoss

__all__ = [
    'DistillLoss', 'KDLoss', 'HardKDLoss', 'DeiTDistillationLoss', 'NKDLoss', 'DKDLoss',
    'ViTKDLoss', 'FitNetLoss', 'MGDLoss', 'SpectralKDLoss', 'DualViewMimicLoss', 'ScaleKDLoss',
    'PATLoss', 'HierarchicalContextLoss', 'OFALoss'
]
