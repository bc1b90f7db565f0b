import os
import os.path as osp
import time

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(ROOT, 'configs', 'demo')
TEACHER_CFG = osp.join(DEMO, 'resnet18-w32_1xb64-10e_digits.py')
STUDENT_CFG = osp.join(DEMO, 'resnet18-w4_1xb64-80e_digits-150.py')
KD_CFG = osp.join(DEMO, 'r18w32_kd_r18w4_1xb64-80e_digits-150.py')

torch.set_num_threads(min(2, os.cpu_count() or 1))


def tiny_cfg(config, work_dir, max_epochs=1, n_train=128, n_val=60, augment=True, **model):
    """A demo config shrunk for tests: a slice of the digits, a short schedule, quiet logs."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    cfg.work_dir = str(work_dir)
    cfg.log_level = 'WARNING'
    cfg.experiment_name = f'test_{time.time_ns()}'
    cfg.train_dataloader.batch_size = 32
    # The demo students' labelled subset would silently cap n_train.
    cfg.train_dataloader.dataset.pop('subset_size', None)
    cfg.train_dataloader.dataset.indices = n_train
    if not augment:
        cfg.train_dataloader.dataset.pipeline = [dict(type='PackInputs')]
    cfg.val_dataloader.dataset.indices = n_val
    cfg.test_dataloader = cfg.val_dataloader
    cfg.train_cfg.max_epochs = max_epochs
    cfg.train_cfg.val_interval = max_epochs
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True)]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.randomness = dict(seed=0)
    for k, v in model.items():
        cfg.model[k] = v
    return cfg


def mixing_student(config=STUDENT_CFG):
    """The model dict of a demo student with Mixup and CutMix batch augments (soft labels)."""
    from mmengine.config import Config
    model = Config.fromfile(config).model
    model.train_cfg = dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)])
    return model


@pytest.fixture(scope='session')
def teacher_ckpt(tmp_path_factory):
    """A teacher checkpoint written by a real 1-epoch Runner training of the demo teacher."""
    from mmengine.runner import Runner

    import mmkd_ext  # noqa: F401
    work = tmp_path_factory.mktemp('teacher')
    runner = Runner.from_cfg(tiny_cfg(TEACHER_CFG, work, n_train=256))
    runner.train()
    return osp.join(str(work), 'epoch_1.pth')
