from .deit_head import TrainableDeiTClsHead

__all__ = ['TrainableDeiTClsHead']
