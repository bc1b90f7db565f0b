from .builder import build_model, freeze
from .distiller import Distiller
from .taps import FeatureTaps, resolve_module

__all__ = ['Distiller', 'FeatureTaps', 'resolve_module', 'build_model', 'freeze']
