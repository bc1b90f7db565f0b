"""TeacherCheckHook and `tools/test.py CONFIG --teacher` on the digits, with a real trained teacher
and a deliberately broken one.

The teacher here is the demo's ResNet-18-w4 trained for 3 epochs on 512 digits (about 80 % top-1 on
the first 60 test digits; conftest's 1-epoch teacher reaches about 20 %, too close to chance):
a check must tell a trained teacher from a broken one.
"""
import json
import os
import os.path as osp
import re
import socket
import subprocess
import sys

import pytest
import torch
from conftest import KD_CFG, ROOT, STUDENT_CFG, tiny_cfg
from mmengine.hooks import Hook

N_VAL = 60
TEACHER = STUDENT_CFG  # the teacher's config: the demo's ResNet-18-w4


@pytest.fixture(scope='module')
def trained_teacher(tmp_path_factory):
    """A checkpoint of the demo ResNet-18-w4 trained by a real Runner (3 epochs, 512 digits)."""
    from mmengine.runner import Runner

    import mmkd_ext  # noqa: F401
    work = tmp_path_factory.mktemp('teacher_w4')
    cfg = tiny_cfg(TEACHER, work, max_epochs=3, n_train=512, augment=False)
    cfg.train_dataloader.dataset.pop('subset_size', None)  # the first 512 of all train digits
    Runner.from_cfg(cfg).train()
    return osp.join(str(work), 'epoch_3.pth')


def independent_top1(ckpt_path):
    """The teacher's top-1 on the first N_VAL test digits, computed without the distiller, the hook
    or mmengine's evaluator: the teacher config's own classifier and normalisation, argmax."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    import mmkd_ext  # noqa: F401
    from mmkd_ext.datasets import DigitsDataset
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(TEACHER)
    model = MODELS.build(cfg.model).eval()
    state = torch.load(ckpt_path, map_location='cpu', weights_only=False)['state_dict']
    model.load_state_dict(state, strict=True)
    data = DigitsDataset(split='test', pipeline=[])
    imgs = torch.stack([torch.as_tensor(data[i]['img'], dtype=torch.float32)
                        for i in range(N_VAL)])[:, None]
    labels = torch.tensor([data[i]['gt_label'] for i in range(N_VAL)])
    mean, std = cfg.data_preprocessor['mean'][0], cfg.data_preprocessor['std'][0]
    with torch.no_grad():
        logits = model((imgs - mean) / std, mode='tensor')
    return 100.0 * (logits.argmax(1) == labels).float().mean().item()


@pytest.fixture(scope='module')
def teacher_top1(trained_teacher):
    return independent_top1(trained_teacher)


@pytest.fixture(scope='module')
def broken_ckpt(trained_teacher, tmp_path_factory):
    """The trained teacher with the values of every weight tensor permuted: the keys and shapes
    still match (the checkpoint loads cleanly), the network is not the trained one."""
    ckpt = torch.load(trained_teacher, map_location='cpu', weights_only=False)
    gen = torch.Generator().manual_seed(0)
    state = {}
    for k, v in ckpt['state_dict'].items():
        if v.is_floating_point() and v.numel() > 1 and 'running' not in k:
            v = v.flatten()[torch.randperm(v.numel(), generator=gen)].view_as(v)
        state[k] = v
    path = tmp_path_factory.mktemp('broken') / 'broken_teacher.pth'
    torch.save({'state_dict': state}, path)
    return str(path)


class IterCounter(Hook):
    """Counts training iterations."""
    priority = 'LOWEST'

    def __init__(self):
        self.count = 0

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.count += 1


def kd_runner(work, ckpt, hook=None, **kw):
    from mmengine.runner import Runner

    import mmkd_ext  # noqa: F401
    cfg = tiny_cfg(
        KD_CFG, work, n_train=64, n_val=N_VAL, teacher=TEACHER, teacher_checkpoint=ckpt, **kw)
    if hook is not None:
        cfg.custom_hooks = [hook]
    return cfg, Runner.from_cfg(cfg)


def test_right_teacher_passes_and_training_proceeds(tmp_path, trained_teacher, teacher_top1):
    # The teacher is trained (10 classes: chance is 10 %).
    assert teacher_top1 > 40, teacher_top1
    _, runner = kd_runner(
        tmp_path, trained_teacher,
        dict(type='mmkd_ext.TeacherCheckHook', expected_top1=teacher_top1 + 0.5, tolerance=1.0))
    counter = IterCounter()
    runner.register_hook(counter)
    runner.train()
    check = [h for h in runner.hooks if type(h).__name__ == 'TeacherCheckHook'][0]
    # The hook measured what the independent computation gives (same images, same teacher).
    assert check.result == pytest.approx(teacher_top1, abs=1e-4)
    assert counter.count == runner.iter > 0


def test_broken_teacher_stops_before_any_iteration(tmp_path, broken_ckpt, teacher_top1):
    broken_top1 = independent_top1(broken_ckpt)
    assert broken_top1 < teacher_top1 - 1.0  # the shuffled weights really break it
    _, runner = kd_runner(tmp_path, broken_ckpt,
                          dict(type='mmkd_ext.TeacherCheckHook', expected_top1=teacher_top1))
    counter = IterCounter()
    runner.register_hook(counter)
    from mmkd_ext.engine.hooks import TeacherCheckError
    with pytest.raises(TeacherCheckError) as err:
        runner.train()
    msg = str(err.value)
    assert f'{broken_top1:.2f}' in msg and f'expected {teacher_top1:.2f}' in msg
    assert 'tolerance 1.00' in msg and 'teacher_checkpoint' in msg and 'normalisation' in msg
    assert counter.count == 0 and runner.iter == 0
    assert not osp.exists(osp.join(str(tmp_path), 'epoch_1.pth'))


def test_expected_value_above_the_tolerance_fails(tmp_path, trained_teacher, teacher_top1):
    # The right teacher, but the config promises 2 points more than it gives: also stopped.
    from mmkd_ext.engine.hooks import TeacherCheckError
    _, runner = kd_runner(
        tmp_path, trained_teacher,
        dict(type='mmkd_ext.TeacherCheckHook', expected_top1=teacher_top1 + 2.0, tolerance=1.0))
    with pytest.raises(TeacherCheckError, match=f'{teacher_top1:.2f}'):
        runner.train()
    assert runner.iter == 0


def test_check_sees_the_teachers_input_as_training_does(tmp_path, trained_teacher, teacher_top1):
    # A student normalised otherwise (x / 255 instead of (x - 78) / 96): the distiller converts its
    # batch back for the teacher, in training and in the check, which so measures the teacher's
    # own accuracy.
    from mmengine.runner import Runner

    from mmkd_ext.utils.config import load_model_config
    student = load_model_config(STUDENT_CFG)
    student.data_preprocessor.update(mean=[0.0], std=[255.0])
    cfg = tiny_cfg(
        KD_CFG,
        tmp_path,
        n_train=32,
        n_val=N_VAL,
        teacher=TEACHER,
        teacher_checkpoint=trained_teacher,
        student=student)
    cfg.custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook', expected_top1=teacher_top1)]
    runner = Runner.from_cfg(cfg)
    runner.train()
    check = [h for h in runner.hooks if type(h).__name__ == 'TeacherCheckHook'][0]
    assert check.result == pytest.approx(teacher_top1, abs=1e-4)


def test_resumed_run_skips_the_check(tmp_path, trained_teacher, teacher_top1):
    from mmengine.runner import Runner

    from mmkd_ext.engine.hooks import TeacherCheckError
    cfg, runner = kd_runner(tmp_path, trained_teacher)
    runner.train()  # one epoch, no hook: writes epoch_1.pth
    # Resume with a hook that this teacher fails (it is below 100 %): the check is skipped, it
    # ran when the run started ...
    assert teacher_top1 < 100
    cfg.custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook', expected_top1=100.0, tolerance=0.0)]
    cfg.train_cfg.max_epochs = 2
    cfg.resume = True
    cfg.experiment_name += '_resumed'
    resumed = Runner.from_cfg(cfg)
    resumed.train()
    assert resumed.iter > runner.iter
    # ... unless asked to check on resume.
    cfg.train_cfg.max_epochs = 3
    cfg.experiment_name += '_again'
    cfg.custom_hooks[0]['check_on_resume'] = True
    again = Runner.from_cfg(cfg)
    with pytest.raises(TeacherCheckError):
        again.train()
    assert again.iter == resumed.iter


def test_hook_arguments_and_non_distiller(tmp_path):
    from mmengine.runner import Runner

    from mmkd_ext.engine.hooks import TeacherCheckHook
    with pytest.raises(ValueError, match='percentage'):
        TeacherCheckHook(expected_top1=110.0)
    with pytest.raises(ValueError, match='tolerance'):
        TeacherCheckHook(expected_top1=80.0, tolerance=-1)
    with pytest.raises(KeyError, match='accuracy/top1'):
        TeacherCheckHook(expected_top1=80.0).check({'accuracy/top5': 95.0})
    cfg = tiny_cfg(STUDENT_CFG, tmp_path, n_train=32, n_val=20)
    cfg.custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook', expected_top1=50.0)]
    with pytest.raises(TypeError, match='distillation'):
        Runner.from_cfg(cfg).train()


@pytest.fixture(scope='module')
def test_tool():
    """tools/test.py as a module (its main(argv) returns the exit status)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('mmkd_tools_test',
                                                  osp.join(ROOT, 'tools', 'test.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_test_tool_teacher_command(tmp_path, trained_teacher, teacher_top1):
    # As a user runs it: python tools/test.py CONFIG --teacher --out FILE
    cfg = tiny_cfg(
        KD_CFG, tmp_path / 'work', n_val=N_VAL, teacher=TEACHER, teacher_checkpoint=trained_teacher)
    cfg.custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook', expected_top1=teacher_top1)]
    path = str(tmp_path / 'kd.py')
    cfg.dump(path)
    out = tmp_path / 'teacher.json'
    proc = subprocess.run([sys.executable, 'tools/test.py', path, '--teacher', '--out',
                           str(out)],
                          cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS='1'),
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (f'teacher accuracy/top1: {teacher_top1:.2f}, expected {teacher_top1:.2f} '
            f'(tolerance 1.00): PASS') in proc.stdout
    result = json.load(open(out))
    assert result['accuracy/top1'] == pytest.approx(teacher_top1, abs=1e-4)
    assert result['passed'] is True


def test_test_tool_teacher_fails_and_refuses(tmp_path, test_tool, trained_teacher, broken_ckpt,
                                             teacher_top1, capsys):
    cfg = tiny_cfg(
        KD_CFG, tmp_path / 'work', n_val=N_VAL, teacher=TEACHER, teacher_checkpoint=trained_teacher)
    cfg.custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook', expected_top1=teacher_top1)]
    path = str(tmp_path / 'kd.py')
    cfg.dump(path)
    # Another teacher file through --cfg-options: the broken one fails, exit status 1.
    assert test_tool.main(
        [path, '--teacher', '--cfg-options', f'model.teacher_checkpoint={broken_ckpt}']) == 1
    assert re.search(r'teacher accuracy/top1: [\d.]+, expected [\d.]+ \(tolerance 1.00\): FAIL',
                     capsys.readouterr().out)
    # Wrong uses are refused (argparse: exit status 2) with a message that says what to do.
    with pytest.raises(SystemExit) as err:
        test_tool.parse_args([path, trained_teacher, '--teacher'])
    assert err.value.code == 2 and 'model.teacher_checkpoint=FILE' in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        test_tool.parse_args([path])
    assert err.value.code == 2 and '--teacher' in capsys.readouterr().err
    # An empty CHECKPOINT (tools/dist_test.sh CONFIG "" GPUS --teacher) is no checkpoint.
    assert test_tool.parse_args([path, '', '--teacher']).checkpoint is None


def test_test_tool_teacher_without_hook(tmp_path, test_tool, trained_teacher, teacher_top1, capsys):
    # A config without the hook: the measured value only.
    cfg = tiny_cfg(
        KD_CFG, tmp_path / 'work', n_val=N_VAL, teacher=TEACHER, teacher_checkpoint=trained_teacher)
    path = str(tmp_path / 'kd_nohook.py')
    cfg.dump(path)
    assert test_tool.main([path, '--teacher']) == 0
    assert (f'teacher accuracy/top1: {teacher_top1:.2f} (no expected value given)'
            in capsys.readouterr().out)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_distributed_check_gathers_all_ranks(tmp_path, trained_teacher, teacher_top1):
    # Two CPU processes (gloo): each evaluates half of the 60 images; the hook must report the
    # top-1 over all of them, the same as the single-process independent value.
    cfg = tiny_cfg(
        KD_CFG,
        tmp_path / 'work',
        n_train=64,
        n_val=N_VAL,
        teacher=TEACHER,
        teacher_checkpoint=trained_teacher)
    cfg.custom_hooks = [dict(type='mmkd_ext.TeacherCheckHook', expected_top1=teacher_top1)]
    cfg.log_level = 'INFO'
    path = str(tmp_path / 'kd_ddp.py')
    cfg.dump(path)
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1', PORT=str(free_port()))
    proc = subprocess.run(
        ['bash', 'tools/dist_train.sh', path, '2', '--work-dir',
         str(tmp_path / 'ddp')],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    line = (f'teacher accuracy/top1: {teacher_top1:.2f}, expected {teacher_top1:.2f} '
            f'(tolerance 1.00): PASS')
    assert line in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-5000:]
    assert osp.isfile(tmp_path / 'ddp' / 'epoch_1.pth')
