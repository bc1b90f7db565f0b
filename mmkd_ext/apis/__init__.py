from mmkd_ext.utils.config import load_config
from .runner import DictAction, build_runner, is_distiller

__all__ = ['build_runner', 'load_config', 'is_distiller', 'DictAction']
