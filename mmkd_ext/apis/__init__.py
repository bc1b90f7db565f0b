from .runner import DictAction, build_runner, load_config

__all__ = ['build_runner', 'load_config', 'DictAction']
