"""The package carries its configs and tools (mmkd_ext/.mim, made by setup.py): a user's project
outside the checkout inherits our configs with ``_base_ = ['mmkd_ext::...']`` and trains them with
the packaged tools/train.py (what ``mim train mmkd_ext CONFIG`` runs)."""
import glob
import os
import os.path as osp
import subprocess
import sys
import textwrap

import pytest
from conftest import KD_CFG, ROOT

import mmkd_ext
from mmkd_ext.utils.config import package_config_path

PKG = osp.dirname(mmkd_ext.__file__)
CONFIGS = osp.join(ROOT, 'configs')
KD_REL = osp.relpath(KD_CFG, CONFIGS)  # e.g. demo/<the KD demo config>.py


def test_mim_tree_holds_configs_tools_and_index():
    rel = sorted(
        osp.relpath(p, CONFIGS) for p in glob.glob(osp.join(CONFIGS, '**', '*.py'), recursive=True))
    assert len(rel) > 10
    for r in rel:
        packaged = package_config_path(f'mmkd_ext::{r}')
        assert packaged.startswith(osp.join(PKG, '.mim', 'configs') + os.sep), packaged
        assert osp.samefile(packaged, osp.join(CONFIGS, r)), r
    for tool in ('train.py', 'test.py', 'dist_train.sh'):
        assert osp.samefile(osp.join(PKG, '.mim', 'tools', tool), osp.join(ROOT, 'tools', tool))
    assert osp.isfile(osp.join(PKG, '.mim', 'model-index.yml'))
    with pytest.raises(FileNotFoundError, match='Closest'):
        package_config_path('mmkd_ext::demo/no_such_config.py')


def _user_project(tmp_path):
    """A user's config in a directory of its own, inheriting the KD demo from the package."""
    cfg = tmp_path / 'my_kd.py'
    cfg.write_text(
        textwrap.dedent(f"""\
        _base_ = ['mmkd_ext::{KD_REL}']
        model = dict(teacher_checkpoint=None)  # no teacher trained here: it keeps its init
        train_dataloader = dict(batch_size=32, dataset=dict(indices=64))
        val_dataloader = dict(dataset=dict(indices=30))
        train_cfg = dict(max_epochs=1, val_interval=1)
        param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True)]
        default_hooks = dict(checkpoint=dict(interval=1), logger=dict(interval=1))
        log_level = 'WARNING'
        """))
    return cfg


def _run(args, cwd):
    proc = subprocess.run(
        [sys.executable] + args, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def test_user_config_inherits_a_packaged_config(tmp_path):
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(str(_user_project(tmp_path)))
    # The inherited config's own relative paths resolve inside the package's .mim.
    assert cfg.model.student.startswith(osp.join(PKG, '.mim', 'configs') + os.sep)
    assert cfg.model.teacher_checkpoint is None and cfg.train_dataloader.dataset.indices == 64
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    assert [type(m).__name__ for m in model.methods] == ['KDLoss']
    # The student is the demo's, as its config in the checkout builds it.
    student_cfg = Config.fromfile(osp.join(osp.dirname(KD_CFG), osp.basename(cfg.model.student)))
    student = MODELS.build(student_cfg.model)
    assert (sum(p.numel()
                for p in model.student.parameters()) == sum(p.numel()
                                                            for p in student.parameters()))


def test_user_config_inherits_an_imagenet_recipe(tmp_path):
    """The ViTKD recipe, inherited whole: its data, schedule and runtime come from mmpretrain."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    user = tmp_path / 'my_vitkd.py'
    user.write_text("_base_ = ['mmkd_ext::vitkd/deit-s_vitkd_deit-t_4xb256-300e_in1k.py']\n"
                    'model = dict(teacher_checkpoint=None)\n'
                    'train_dataloader = dict(batch_size=128)\n')
    cfg = Config.fromfile(str(user))
    assert cfg.train_dataloader.batch_size == 128
    assert cfg.train_dataloader.dataset.type == 'ImageNet'
    # What mmpretrain's base config defines keeps mmpretrain's scope; the model is ours.
    assert cfg.val_evaluator._scope_ == 'mmpretrain' and cfg.model._scope_ == 'mmkd_ext'
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    assert [type(m).__name__ for m in model.methods] == ['ViTKDLoss']


def test_packaged_train_tool_trains_the_user_config(tmp_path):
    """What `mim train mmkd_ext my_kd.py` runs: the packaged tools/train.py, from elsewhere."""
    _user_project(tmp_path)
    train = osp.join(PKG, '.mim', 'tools', 'train.py')
    _run([train, 'my_kd.py', '--work-dir', 'wd', '--launcher', 'none'], cwd=tmp_path)
    assert osp.isfile(tmp_path / 'wd' / 'epoch_1.pth')
    # It validated the epoch with the inherited evaluator.
    logs = glob.glob(str(tmp_path / 'wd' / '*' / 'vis_data' / 'scalars.json'))
    assert logs and 'accuracy/top1' in open(logs[0]).read()
