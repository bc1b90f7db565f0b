"""The registries' scope handling (mmkd_ext/registry.py, ScopedRegistry): mmkd_ext's types are found
whatever the default scope, ``_scope_`` is respected, other names fall through to the parent."""
import pytest
import torch.nn as nn
from mmengine.model import BaseDataPreprocessor
from mmengine.registry import DATASETS as ROOT_DATASETS
from mmengine.registry import HOOKS as ROOT_HOOKS
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope

import mmkd_ext  # noqa: F401
from mmkd_ext.losses import KDLoss
from mmkd_ext.registry import HOOKS, MODELS

SCOPES = ['mmpretrain', 'mmdet', 'mmseg', None]


@pytest.fixture(params=SCOPES, ids=str)
def default_scope(request, monkeypatch):
    """Run the test under each default scope; None: no default scope at all."""
    scope = request.param
    if scope is None:
        monkeypatch.setattr(DefaultScope, 'get_current_instance', classmethod(lambda cls: None))
        yield None
    else:
        # (registers the package's modules, as its configs' custom imports would)
        __import__(dict(mmseg='mmseg.models', mmdet='mmdet.models').get(scope, 'mmpretrain.models'))
        with DefaultScope.overwrite_default_scope(scope):
            assert DefaultScope.get_current_instance().scope_name == scope
            yield scope


@pytest.mark.parametrize('type_', ['KDLoss', 'mmkd_ext.KDLoss'])
def test_own_types_build_under_any_default_scope(default_scope, type_):
    loss = MODELS.build(dict(type=type_, tau=3.0))
    assert type(loss) is KDLoss and loss.tau == 3.0
    # Through the root registry (what a Runner uses for `model`), the scoped name works as well.
    if type_.startswith('mmkd_ext.'):
        assert type(ROOT_MODELS.build(dict(type=type_))) is KDLoss


def test_the_callers_config_is_not_modified(default_scope):
    cfg = dict(type='KDLoss', tau=2.0)
    MODELS.build(cfg)
    assert cfg == dict(type='KDLoss', tau=2.0)


@pytest.fixture
def clashing_name():
    """A class registered in mmkd_ext under a name that mmpretrain has too (LinearClsHead)."""

    class Ours(nn.Module):
        pass

    name = 'LinearClsHead'
    assert name not in MODELS.module_dict
    MODELS.register_module(name=name, module=Ours)
    try:
        yield name, Ours
    finally:
        MODELS.module_dict.pop(name)


def test_own_scope_first_and_scope_key_respected(clashing_name):
    from mmpretrain.models.heads import LinearClsHead
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    name, ours = clashing_name
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        assert type(MODELS.build(dict(type=name))) is ours  # mmkd_ext's own first
        head = MODELS.build(dict(type=name, _scope_='mmpretrain', num_classes=3, in_channels=4))
        assert type(head) is LinearClsHead  # _scope_ is obeyed
        assert type(MODELS.build(dict(type=f'mmpretrain.{name}', num_classes=3,
                                      in_channels=4))) is LinearClsHead
        # mmpretrain's registry is not affected by the clash.
        assert type(PRETRAIN_MODELS.build(dict(type=name, num_classes=3,
                                               in_channels=4))) is LinearClsHead
    with DefaultScope.overwrite_default_scope('mmdet'):
        assert type(MODELS.build(dict(type=name))) is ours


def test_scope_key_to_another_package_does_not_find_our_names():
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        with pytest.raises(KeyError, match='KDLoss'):
            MODELS.build(dict(type='KDLoss', _scope_='mmpretrain'))
        # ...unless the type names our scope.
        assert type(MODELS.build(dict(type='mmkd_ext.KDLoss', _scope_='mmpretrain'))) is KDLoss


def test_unknown_names_fall_through_to_the_default_scope_and_the_root():
    from mmpretrain.models import ImageClassifier
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(
            dict(
                type='ImageClassifier',
                backbone=dict(type='ResNet', depth=18, base_channels=4),
                neck=dict(type='GlobalAveragePooling'),
                head=dict(type='LinearClsHead', num_classes=3, in_channels=32)))
        assert type(model) is ImageClassifier
    # A type of MMEngine's root registry, from mmkd_ext's own scope.
    with DefaultScope.overwrite_default_scope('mmkd_ext'):
        assert type(MODELS.build(dict(type='BaseDataPreprocessor'))) is BaseDataPreprocessor
    with pytest.raises(KeyError, match='NoSuchModel'):
        MODELS.build(dict(type='NoSuchModel'))


def test_hooks_and_datasets_in_the_mmkd_ext_scope(default_scope):
    from mmengine.hooks import CheckpointHook

    from mmkd_ext.datasets import DigitsDataset

    # Our HOOKS is scoped like MODELS; a parent's hook is still found.
    assert type(HOOKS.build(dict(type='CheckpointHook'))) is CheckpointHook
    assert type(ROOT_HOOKS.build(dict(type='mmengine.CheckpointHook'))) is CheckpointHook
    # The Runner builds datasets from the root registry: the scoped name finds ours.
    ds = ROOT_DATASETS.build(
        dict(type='mmkd_ext.DigitsDataset', split='test', indices=3, pipeline=[]))
    assert type(ds) is DigitsDataset and len(ds) == 3
