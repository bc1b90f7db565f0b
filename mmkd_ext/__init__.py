"""mmkd_ext: knowledge distillation for OpenMMLab models.

Importing the package registers everything into the ``mmkd_ext`` registries (see
:mod:`mmkd_ext.registry`) and makes torch.load accept MMEngine's own checkpoint contents
(see :mod:`mmkd_ext.utils.checkpoint`).
"""
from . import utils  # noqa: F401  (installs the checkpoint loading policy)
from . import datasets, distillers, engine, generators, losses, models, projectors  # noqa: F401
from .version import __version__

__all__ = ['__version__']
