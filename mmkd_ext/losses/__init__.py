from .base import DistillLoss
from .dkd import DKDLoss
from .hard_kd import HardKDLoss
from .kd import KDLoss
from .nkd import NKDLoss

__all__ = ['DistillLoss', 'KDLoss', 'HardKDLoss', 'NKDLoss', 'DKDLoss']
