from .builder import build_model, load_model_config, load_teacher_checkpoint
from .distiller import Distiller
from .taps import FeatureTaps, resolve_module

__all__ = ['Distiller', 'FeatureTaps', 'resolve_module', 'build_model', 'load_model_config',
           'load_teacher_checkpoint']
