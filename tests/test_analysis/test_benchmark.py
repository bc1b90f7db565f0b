"""The benchmark tool runs on a tiny config and reports every field (not the speed)."""
import json
import os.path as osp
import subprocess
import sys

from conftest import KD_CFG, ROOT


def test_benchmark_tool_writes_every_field(tmp_path):
    cmd = [sys.executable, 'tools/analysis/benchmark.py', KD_CFG, '--batch', '4', '--size', '8',
           '--iters', '3', '--warmup', '1', '--sweep-batch', '2', '4', '--sweep-size', '8', '12',
           '--out-dir', str(tmp_path), '--markdown', str(tmp_path / 'bench.md')]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    name = osp.splitext(osp.basename(KD_CFG))[0]
    r = json.load(open(tmp_path / f'{name}.json'))
    assert {'machine', 'main', 'methods', 'params', 'sweep_batch', 'sweep_size'} <= set(r)
    main = r['main']
    for step in ('student', 'teacher', 'teacher_full', 'distill'):
        assert {'median', 'q1', 'q3', 'min', 'n'} <= set(main['times_ms'][step])
        assert main['times_ms'][step]['median'] > 0
    assert main['floor_ms'] > 0 and main['overhead_ratio'] > 0
    mem = main['memory']
    for step in ('student', 'teacher', 'distill'):
        assert {'saved_for_backward_mb', 'peak_mb'} <= set(mem[step])
    # The teacher runs without autograd: nothing of it is saved for backward.
    assert mem['teacher']['saved_for_backward_mb'] == 0
    assert mem['distill']['saved_for_backward_mb'] >= mem['student']['saved_for_backward_mb']
    assert {'teacher_weights_mb', 'teacher_taps_mb', 'method_params_mb'} <= set(mem)
    assert [row['batch'] for row in r['sweep_batch']] == [2, 4]
    assert [row['image_size'] for row in r['sweep_size']] == [8, 12]
    assert r['methods'][0]['type'] == 'KDLoss' and r['methods'][0]['ms'] > 0
    assert r['params']['extra_trainable'] == 0
    assert osp.isfile(tmp_path / f'{name}_sweep.png')
    assert 'ratio' in open(tmp_path / 'bench.md').read()
