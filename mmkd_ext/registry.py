"""Registries of mmkd_ext: children of MMEngine's root registries, scope ``mmkd_ext``.

Everything mmkd_ext registers is found from any OpenMMLab config as ``type='mmkd_ext.Name'``
(e.g. ``model = dict(type='mmkd_ext.Distiller', ...)``), whatever the config's ``default_scope``.
Inside a distiller, ``methods`` entries are built from :data:`MODELS` directly, so there a plain
``type='KDLoss'`` is enough.
"""
import copy

from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry(
    'model',
    parent=MMENGINE_MODELS,
    scope='mmkd_ext',
    locations=['mmkd_ext.distillers', 'mmkd_ext.losses', 'mmkd_ext.models', 'mmkd_ext.projectors',
               'mmkd_ext.generators'])

DATASETS = Registry(
    'dataset', parent=MMENGINE_DATASETS, scope='mmkd_ext', locations=['mmkd_ext.datasets'])


def build_module(cfg: dict, **fill):
    """Build ``cfg`` updated with ``fill`` (e.g. channel counts from the dry run) from MODELS.

    The scope defaults to 'mmkd_ext': under a config's ``default_scope='mmpretrain'`` a plain
    ``type='LinearProjector'`` would otherwise be looked up in mmpretrain's registry only.
    """
    cfg = dict(copy.deepcopy(cfg), **fill)
    cfg.setdefault('_scope_', 'mmkd_ext')
    return MODELS.build(cfg)
