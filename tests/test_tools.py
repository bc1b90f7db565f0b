"""The command-line tools, run as a user runs them."""
import glob
import json
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch
from conftest import KD_CFG, ROOT, tiny_cfg


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run(cmd, env=None, timeout=600):
    full_env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1', **(env or {}))
    proc = subprocess.run(
        cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f'{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
    return proc.stdout + proc.stderr


def write_tiny_config(tmp_path, teacher_ckpt, **kw):
    cfg = tiny_cfg(KD_CFG, tmp_path / 'work', teacher_checkpoint=teacher_ckpt, **kw)
    path = tmp_path / 'tiny_kd.py'
    cfg.dump(str(path))
    return str(path)


def test_dist_train_two_processes_gloo(tmp_path, teacher_ckpt):
    cfg = write_tiny_config(tmp_path, teacher_ckpt)
    out = run(['bash', 'tools/dist_train.sh', cfg, '2', '--work-dir',
               str(tmp_path / 'ddp')],
              env=dict(PORT=str(free_port())))
    assert osp.isfile(tmp_path / 'ddp' / 'epoch_1.pth'), out[-2000:]
    ckpt = torch.load(tmp_path / 'ddp' / 'epoch_1.pth', weights_only=False)
    assert ckpt['meta']['epoch'] == 1
    logs = glob.glob(str(tmp_path / 'ddp' / '*' / 'vis_data' / 'scalars.json'))
    assert logs, 'no scalar log written'
    text = open(logs[0]).read()
    assert 'loss_kd' in text and 'accuracy/top1' in text


def test_close_distributed_destroys_the_process_group(tmp_path):
    # tools/train.py and tools/test.py end with it: a rank that exits with its process group alive
    # can abort in exit-time destructors after the work is done.
    import torch.distributed as dist

    from mmkd_ext.apis import close_distributed
    dist.init_process_group(
        'gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    assert dist.is_initialized()
    close_distributed()
    assert not dist.is_initialized()
    close_distributed()  # a second call (or one without a group) is a no-op


def test_train_accepts_both_local_rank_spellings(tmp_path, teacher_ckpt):
    cfg = write_tiny_config(tmp_path, teacher_ckpt, n_train=32)
    for flag in ('--local-rank=0', '--local_rank=0'):
        run([
            sys.executable, 'tools/train.py', cfg, flag, '--work-dir',
            str(tmp_path / flag[2:7]), '--cfg-options', 'train_cfg.val_interval=5'
        ])


def test_export_and_test_tools(tmp_path, teacher_ckpt):
    cfg = write_tiny_config(tmp_path, teacher_ckpt, n_train=32)
    work = tmp_path / 'train'
    run([sys.executable, 'tools/train.py', cfg, '--work-dir', str(work)])
    out = run([
        sys.executable, 'tools/export_student.py',
        str(work / 'epoch_1.pth'),
        str(tmp_path / 'student.pth')
    ])
    assert 'student tensors' in out
    # The exported student, evaluated with the student's own config.
    student_cfg = tiny_cfg(
        osp.join(ROOT, 'configs/demo/resnet18-w4_1xb64-80e_digits-150.py'), tmp_path / 's')
    student_cfg.dump(str(tmp_path / 'student_cfg.py'))
    run([
        sys.executable, 'tools/test.py',
        str(tmp_path / 'student_cfg.py'),
        str(tmp_path / 'student.pth'), '--work-dir',
        str(tmp_path / 't1'), '--out',
        str(tmp_path / 'm1.json')
    ])
    run([
        sys.executable, 'tools/test.py', cfg,
        str(work / 'epoch_1.pth'), '--work-dir',
        str(tmp_path / 't2'), '--out',
        str(tmp_path / 'm2.json')
    ])
    m1 = json.load(open(tmp_path / 'm1.json'))
    m2 = json.load(open(tmp_path / 'm2.json'))
    assert m1['accuracy/top1'] == pytest.approx(m2['accuracy/top1'])


def test_export_refuses_a_non_distiller_checkpoint(tmp_path):
    from mmkd_ext.apis.export import export_student
    torch.save({'state_dict': {'backbone.conv.weight': torch.zeros(1)}}, tmp_path / 'x.pth')
    with pytest.raises(ValueError, match='not a checkpoint of mmkd_ext.Distiller'):
        export_student(str(tmp_path / 'x.pth'), str(tmp_path / 'y.pth'))


def test_list_taps_prints_paths_and_shapes():
    out = run([sys.executable, 'tools/list_taps.py', KD_CFG])
    assert '== student ==' in out and '== teacher ==' in out
    lines = [line for line in out.splitlines() if line.startswith('backbone.layer4 ')]
    assert len(lines) == 2
    assert '(32, 1, 1)' in lines[0] and '(256, 1, 1)' in lines[1]
    assert any(line.startswith('head ') and '(10,)' in line for line in out.splitlines())


def test_teacher_cache_for_two_processes_through_the_dist_scripts(tmp_path, teacher_ckpt):
    # Built by two gloo processes and by one process for a world of two: the same shards; then a
    # two-process training reads its own rank's shards and checks them against its live teacher
    # at every step (verify_every=1).
    import numpy as np
    from conftest import mixing_student
    cfg = tiny_cfg(KD_CFG, tmp_path / 'work', teacher_checkpoint=teacher_ckpt)
    cfg.model.student = mixing_student()
    cfg.augment_stream = dict(seed=0)
    path = str(tmp_path / 'stream_kd.py')
    cfg.dump(path)
    run([
        'bash', 'tools/dist_build_teacher_cache.sh', path, '2', '--epochs', '1', '--out',
        str(tmp_path / 'ddp_cache')
    ],
        env=dict(PORT=str(free_port())))
    run([
        sys.executable, 'tools/build_teacher_cache.py', path, '--epochs', '1', '--world-size', '2',
        '--out',
        str(tmp_path / 'one_cache')
    ])
    for rank in (0, 1):
        for part in ('indices', 'logits'):
            name = f'e0000_r00{rank}.{part}.npy'
            a, b = (np.load(tmp_path / d / name) for d in ('ddp_cache', 'one_cache'))
            assert a.shape[0] == 64 and np.array_equal(a, b)
    manifest = json.load(open(tmp_path / 'one_cache' / 'manifest.json'))
    assert manifest['world_size'] == 2 and manifest['epochs'] == [0]
    out = run([
        'bash', 'tools/dist_train.sh', path, '2', '--work-dir',
        str(tmp_path / 'ddp'), '--cfg-options', f'model.teacher_cache.path={tmp_path}/one_cache',
        'model.teacher_cache.verify_every=1', 'model.teacher_cache.atol=1e-5', 'log_level=INFO'
    ],
              env=dict(PORT=str(free_port())))
    assert osp.isfile(tmp_path / 'ddp' / 'epoch_1.pth'), out[-2000:]
    assert 'read from the cache' in out and 'run every 1 steps to check it' in out
