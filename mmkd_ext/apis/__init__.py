from .runner import DictAction, build_runner, is_distiller, load_config

__all__ = ['build_runner', 'load_config', 'is_distiller', 'DictAction']
