"""Registries of mmkd_ext: children of MMEngine's root registries, scope ``mmkd_ext``.

Everything mmkd_ext registers is found from any OpenMMLab config as ``type='mmkd_ext.Name'``
(e.g. ``model = dict(type='mmkd_ext.Distiller', ...)``), whatever the config's ``default_scope``.
:data:`MODELS` builds in its own scope unless a config names another (``_scope_``), so inside a
distiller a plain ``type='KDLoss'`` or ``type='LinearProjector'`` is enough.
"""
import copy

from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry


class ScopedRegistry(Registry):
    """A registry whose ``build`` finds its own classes whatever the default scope.

    MMEngine's ``build`` looks a plain ``type`` up in the registry of the *current default scope*
    (e.g. mmpretrain's, under ``default_scope='mmpretrain'``), not in the registry it is called on.
    Here a plain or ``mmkd_ext.`` type is resolved to its class first; the default scope is left as
    it is, so what that class builds inside (a student from mmpretrain) is found as usual.
    """

    def build(self, cfg, *args, **kwargs):
        if isinstance(cfg, dict) and isinstance(cfg.get('type'), str) and '_scope_' not in cfg:
            scope, name = self.split_scope_key(cfg['type'])
            obj_cls = self.get(name) if scope in (None, self.scope) else None
            if obj_cls is not None:
                cfg = copy.copy(cfg)
                cfg['type'] = obj_cls
        return super().build(cfg, *args, **kwargs)


MODELS = ScopedRegistry(
    'model',
    parent=MMENGINE_MODELS,
    scope='mmkd_ext',
    locations=[
        'mmkd_ext.distillers', 'mmkd_ext.losses', 'mmkd_ext.models', 'mmkd_ext.projectors',
        'mmkd_ext.generators'
    ])

DATASETS = Registry(
    'dataset', parent=MMENGINE_DATASETS, scope='mmkd_ext', locations=['mmkd_ext.datasets'])

DATA_SAMPLERS = Registry(
    'data sampler',
    parent=MMENGINE_DATA_SAMPLERS,
    scope='mmkd_ext',
    locations=['mmkd_ext.datasets'])

HOOKS = ScopedRegistry(
    'hook', parent=MMENGINE_HOOKS, scope='mmkd_ext', locations=['mmkd_ext.engine'])


def build_module(cfg: dict, **fill):
    """Build ``cfg`` updated with ``fill`` (e.g. channel counts from the dry run) from MODELS.

    The config given by the user is not modified.
    """
    return MODELS.build(dict(copy.deepcopy(cfg), **fill))
