"""tools/analysis/benchmark.py: its CPU peak probe, the markdown it renders from its JSON, a run."""
import importlib.util
import json
import os.path as osp
import subprocess
import sys

import torch
from conftest import KD_CFG, ROOT

TOOLS = osp.join(ROOT, 'tools', 'analysis')


def _tool_module(name):
    """A script of tools/analysis imported as a module; sys.path is left as it was."""
    spec = importlib.util.spec_from_file_location(name, osp.join(TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path
    return module


def _rows(md, header_start):
    """The table rows (lists of cells) of the table whose header line starts with header_start."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith('|'):
            break
        rows.append([c.strip() for c in line.strip('|').split('|')])
    return rows


def _result(student, teacher, distill, share, extra, sb, peak, sweep):
    """A result as the tool writes it, with the given numbers."""

    def times(med):
        return dict(median=med, q1=med - 1, q3=med + 2, min=med - 1, n=5)

    mem = {
        k: dict(saved_for_backward_mb=s, peak_mb=p)
        for k, s, p in zip(('student', 'teacher', 'distill'), sb, peak)
    }
    mem.update(teacher_weights_mb=84.0, teacher_taps_mb=0.5, method_params_mb=2.25)
    return dict(
        machine=dict(
            cpu='Test CPU',
            machine='x86_64',
            cpu_count=2,
            torch='2.x',
            torch_threads=2,
            device='cpu'),
        settings=dict(iters=5, warmup=2),
        main=dict(
            batch=8,
            image_size=[224, 224],
            floor_ms=student + teacher,
            overhead_ratio=distill / (student + teacher),
            times_ms=dict(
                student=times(student),
                teacher=times(teacher),
                distill=times(distill),
                teacher_full=times(teacher + 10)),
            memory=mem),
        methods=[
            dict(name='a', type='ViTKDLoss', ms=share - 1.0, trainable_params=extra),
            dict(name='b', type='KDLoss', ms=1.0, trainable_params=0)
        ],
        params=dict(student=1, teacher=2, extra_trainable=extra),
        sweep_batch=sweep,
        sweep_size=[])


def test_markdown_shows_the_numbers_of_the_json():
    report = _tool_module('benchmark_report')
    sweep = [
        dict(
            batch=2,
            image_size=224,
            student_ms=111.0,
            teacher_ms=50.0,
            distill_ms=177.0,
            floor_ms=161.0,
            overhead_ratio=1.099)
    ]
    results = [('cfg_a',
                _result(300.0, 200.0, 612.0, 42.5, 2877696, (251.0, 0.0, 263.0),
                        (208.0, 25.0, 220.0), sweep)),
               ('cfg_b',
                _result(123.0, 45.0, 170.0, 0.3, 0, (90.0, 0.0, 90.0), (70.0, 11.0, 69.0), []))]
    md = report.markdown(results, 'python tools/analysis/benchmark.py X')
    assert 'Batch 8, 224 px, 5 timed steps of each kind after 2 warm-up' in md
    main = _rows(md, '| config | method |')
    assert main[0] == [
        'cfg_a', 'ViTKD + KD', '300 [299-302]', '200 [199-202]', '500', '612 [611-614]', '1.224',
        '42.5', '2,877,696'
    ]
    assert main[1] == [
        'cfg_b', 'ViTKD + KD', '123 [122-125]', '45 [44-47]', '168', '170 [169-172]', '1.012',
        '0.3', '0'
    ]
    memory = _rows(md, '| config | saved for backward')
    # bound = student peak + taps + method params; act. = distill - student saved for backward.
    assert memory[0] == [
        'cfg_a', '251 / 0 / 263', '208 / 25 / 220', '84', '0.5', '2.25', '211', '12', 'no / yes'
    ]
    assert memory[1] == [
        'cfg_b', '90 / 0 / 90', '70 / 11 / 69', '84', '0.5', '2.25', '73', '0', 'yes / yes'
    ]
    sweep_rows = _rows(md, '| config | batch |')
    assert sweep_rows == [['cfg_a', '2', '224', '111', '161', '177', '1.099']]


def test_markdown_table_of_modes():
    report = _tool_module('benchmark_report')

    def times(med):
        return dict(median=med, q1=med - 1, q3=med + 2, min=med - 1, n=5)

    with_modes = _result(300.0, 200.0, 612.0, 42.5, 0, (1, 0, 1), (1, 1, 1), [])
    with_modes['modes'] = dict(
        eager=dict(
            student=times(300.0),
            distill=times(612.0),
            first_call_ms=dict(student=350.0, distill=700.0)),
        compile=dict(
            student=times(200.0),
            distill=times(400.0),
            first_call_ms=dict(student=61000.0, distill=95500.0)))
    without = _result(123.0, 45.0, 170.0, 0.3, 0, (1, 0, 1), (1, 1, 1), [])
    md = report.markdown([('cfg_a', with_modes), ('cfg_b', without)], 'cmd')
    assert _rows(md, '| config | mode |') == [
        ['cfg_a', 'eager', '300 [299-302]', '612 [611-614]', '2.040', '0.3 / 0.7'],
        ['cfg_a', 'compile', '200 [199-202]', '400 [399-402]', '2.000', '61.0 / 95.5'],
    ]
    # Without --modes there is no such table.
    assert '| config | mode |' not in report.markdown([('cfg_b', without)], 'cmd')


def test_peak_rss_sees_a_freed_block():
    probe = _tool_module('cpu_peak_probe')
    with probe.PeakRSS() as peak:
        block = torch.ones(16 * 2**20)  # 64 MiB, written so that it is resident
        del block
    assert 60 * 2**20 <= peak.peak < 200 * 2**20
    with probe.PeakRSS() as idle:
        pass
    assert idle.peak < 16 * 2**20


def test_benchmark_tool_on_a_tiny_config(tmp_path):
    md_path = tmp_path / 'bench.md'
    cmd = [
        sys.executable, 'tools/analysis/benchmark.py', KD_CFG, '--batch', '4', '--size', '8',
        '--iters', '3', '--warmup', '1', '--sweep-batch', '2', '4', '--sweep-size', '8', '12',
        '--threads', '1', '--modes', 'eager', 'bf16', '--out-dir',
        str(tmp_path), '--markdown',
        str(md_path)
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    name = osp.splitext(osp.basename(KD_CFG))[0]
    r = json.load(open(tmp_path / f'{name}.json'))
    main, mem = r['main'], r['main']['memory']
    assert (main['batch'], main['image_size']) == (4, [8, 8])
    assert r['settings'] == dict(iters=3, warmup=1)
    assert all(main['times_ms'][k]['n'] == 3 for k in ('student', 'teacher', 'distill'))
    # The teacher runs without autograd: nothing of it is saved for backward.
    assert mem['teacher']['saved_for_backward_mb'] == 0
    # CPU peaks come from the fresh-process probe, for every step.
    assert all(isinstance(mem[k]['peak_mb'], float) for k in ('student', 'teacher', 'distill'))
    assert [row['batch'] for row in r['sweep_batch']] == [2, 4]
    assert [row['image_size'] for row in r['sweep_size']] == [8, 12]
    assert [m['type'] for m in r['methods']] == ['KDLoss'] and r['params']['extra_trainable'] == 0
    assert osp.isfile(tmp_path / f'{name}_sweep.png')
    assert list(r['modes']) == ['eager', 'bf16']
    assert all(r['modes'][m][k]['n'] == 3 for m in r['modes'] for k in ('student', 'distill'))
    md = md_path.read_text()
    bf16 = _rows(md, '| config | mode |')[1]
    assert bf16[:2] == [name, 'bf16']
    assert bf16[2].startswith(f"{r['modes']['bf16']['student']['median']:.0f} [")
    t = {k: v['median'] for k, v in main['times_ms'].items()}
    row = _rows(md, '| config | method |')[0]
    assert row[0] == name and row[1] == 'KD'
    assert row[2].startswith(f"{t['student']:.0f} [") and row[5].startswith(f"{t['distill']:.0f} [")
    assert row[4:7:2] == [f"{main['floor_ms']:.0f}", f"{main['overhead_ratio']:.3f}"]
    # The markdown is the rendering of the JSON it wrote: --render-only rebuilds it from the JSON.
    md_path.unlink()
    _tool_module('benchmark').main(cmd[2:] + ['--render-only'])
    assert md_path.read_text() == md


def test_cached_step_is_timed_on_a_real_cache_and_rendered(tmp_path):
    from mmengine.registry import MODELS

    from mmkd_ext.analysis.step_cost import measure_cached
    from mmkd_ext.utils.config import load_config
    model = load_config(KD_CFG, activate=True).model
    model.teacher_checkpoint = None
    d = MODELS.build(model).train()
    full, top3 = (measure_cached(d, 4, (8, 8), 'cpu', iters=2, warmup=1, topk=k) for k in (None, 3))
    assert d.teacher_cache is None, 'the live distiller is given back'
    # 10 float32 logits + an int32 index; 3 float16 log-probabilities + 3 int16 classes + index.
    assert full['bytes_per_sample'] == 10 * 4 + 4 and top3['bytes_per_sample'] == 3 * 4 + 4
    for r in (full, top3):
        assert set(r['times_ms']) == {'student', 'distill', 'cached'}
        t = {k: v['median'] for k, v in r['times_ms'].items()}
        assert r['cached_over_student'] == t['cached'] / t['student']
        assert r['times_ms']['cached']['n'] == 2
    report = _tool_module('benchmark_report')
    res = _result(100.0, 90.0, 195.0, 1.0, 0, (1, 0, 1), (1, 1, 1), [])
    res['cached'] = [full]
    md = report.markdown([('kd', res)], 'cmd')
    row = _rows(md, '| config | storage |')[0]
    assert row[:2] == ['kd', 'full float32']
    assert row[5] == f"{full['cached_over_student']:.3f}"
    assert row[8:10] == ['44', f'{44 * 1_281_167 / 1e9:.2f}']
