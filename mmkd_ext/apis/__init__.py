from mmkd_ext.utils.config import load_config
from .runner import DictAction, build_runner, close_distributed, is_distiller

__all__ = ['build_runner', 'close_distributed', 'load_config', 'is_distiller', 'DictAction']
