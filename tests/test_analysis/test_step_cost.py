"""mmkd_ext.analysis.step_cost against independent counts and timings."""
import time

import pytest
import torch
import torch.nn as nn
from conftest import KD_CFG

from mmkd_ext.analysis.step_cost import (CudaPeakMemory, SavedForBackward, capture_method_inputs,
                                         make_batch, measure, measure_modes, method_costs,
                                         time_interleaved)


class _SaveGiven(torch.autograd.Function):
    """``2 * x``, saving for backward exactly the tensors it is given."""

    @staticmethod
    def forward(ctx, x, *keep):
        ctx.save_for_backward(*keep)
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return (grad * 2, ) + (None, ) * len(ctx.saved_tensors)


def _graph_saved_bytes(root) -> int:
    """Bytes of the distinct storages a backward graph holds, read from its nodes' ``_saved_*``."""
    seen, total, stack, visited = set(), 0, [root], set()
    while stack:
        node = stack.pop()
        if node is None or node in visited:
            continue
        visited.add(node)
        for attr in dir(node):
            if not attr.startswith('_saved_'):
                continue
            values = getattr(node, attr)
            for t in values if isinstance(values, (list, tuple)) else [values]:
                if torch.is_tensor(t):
                    key = (t.untyped_storage().data_ptr(), t.device)
                    if key not in seen:
                        seen.add(key)
                        total += t.untyped_storage().nbytes()
        stack += [fn for fn, _ in node.next_functions]
    return total


def test_saved_for_backward_counts_each_storage_once():
    x = torch.randn(5, requires_grad=True)
    a = torch.randn(1000)  # 4000 bytes
    b = torch.randn(300, dtype=torch.float64)  # 2400 bytes
    with SavedForBackward() as saved:
        y = _SaveGiven.apply(x, a, b, a[10:20])  # a view of `a` shares its storage
        y = _SaveGiven.apply(y, a)  # `a` again
    assert saved.bytes == 4000 + 2400
    y.sum().backward()


def test_saved_for_backward_matches_the_graph():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5),
        nn.LogSoftmax(dim=1))
    with SavedForBackward() as saved:
        loss = model(torch.randn(2, 3, 8, 8)).sum()
    expected = _graph_saved_bytes(loss.grad_fn)
    # The input (2*3*8*8 floats) is saved by the convolution: the count is not just parameters.
    assert expected > 2 * 3 * 8 * 8 * 4
    assert saved.bytes == expected
    with SavedForBackward() as nothing, torch.no_grad():
        model(torch.randn(2, 3, 8, 8))
    assert nothing.bytes == 0


def test_time_interleaved_orders_by_duration():
    times = time_interleaved(
        dict(short=lambda: time.sleep(0.01), long=lambda: time.sleep(0.04)),
        'cpu',
        iters=3,
        warmup=1)
    assert times['short']['n'] == times['long']['n'] == 3
    assert times['short']['median'] >= 10 and times['long']['median'] >= 40
    assert times['long']['median'] - times['short']['median'] > 15
    assert times['short']['q1'] <= times['short']['median'] <= times['short']['q3']


def test_cuda_peak_memory_refuses_the_cpu():
    with pytest.raises(ValueError, match='CUDA'):
        CudaPeakMemory(torch.device('cpu'))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_peak_memory_sees_a_freed_block():
    device = torch.device('cuda')
    with CudaPeakMemory(device) as peak:
        block = torch.empty(16 * 2**20, device=device)  # 64 MiB
        del block
    assert 64 * 2**20 <= peak.peak < 65 * 2**20


def _slow(method, seconds, calls):
    """Make one method instance slower by ``seconds`` per call and count its calls in ``calls``."""
    forward = method.forward

    def slow_forward(*args, **kwargs):
        calls.append(1)
        time.sleep(seconds)
        return forward(*args, **kwargs)

    method.forward = slow_forward


@pytest.fixture(scope='module')
def kd_distiller():
    from mmengine.registry import MODELS

    from mmkd_ext.utils.config import load_config
    model = load_config(KD_CFG, activate=True).model
    model.teacher_checkpoint = None
    model.methods = [
        dict(type='KDLoss', tau=4.0, name='fast'),
        dict(type='KDLoss', tau=4.0, name='slow')
    ]
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    # One thread: on a shared CPU, spinning thread pools make tiny steps take seconds.
    torch.set_num_threads(1)
    yield MODELS.build(model).train()
    torch.set_num_threads(threads)


def test_method_share_follows_a_slow_method(kd_distiller):
    d = kd_distiller
    inputs, samples = make_batch(d, 4, (8, 8), 'cpu')
    calls = []
    _slow(d.methods[1], 0.1, calls)
    try:
        rows = {r['name']: r for r in method_costs(d, inputs, samples, repeats=3)}
        # The distillation step runs every method once per step: 1 warm-up + 3 timed steps.
        calls.clear()
        m = measure(d, 4, (8, 8), 'cpu', iters=3, warmup=1, memory=False)
    finally:
        del d.methods[1].forward
    assert [rows['fast']['type'], rows['slow']['type']] == ['KDLoss', 'KDLoss']
    assert rows['slow']['ms'] >= 100
    assert rows['fast']['ms'] < rows['slow']['ms'] - 50
    assert len(calls) == 4 and m['times_ms']['distill']['median'] >= 100
    t = {k: v['median'] for k, v in m['times_ms'].items()}
    assert m['floor_ms'] == t['student'] + t['teacher']
    assert m['overhead_ratio'] == t['distill'] / m['floor_ms']


def test_captured_method_inputs_are_the_distillers(kd_distiller):
    d = kd_distiller
    inputs, samples = make_batch(d, 4, (8, 8), 'cpu')
    with torch.no_grad():
        logits_s = d.student(inputs, samples, mode='tensor')
        logits_t = d.teacher(d.teacher_inputs(inputs), samples, mode='tensor')
    (s_feats, t_feats, data_samples), kwargs = capture_method_inputs(d, inputs, samples)[0]
    assert data_samples is samples and 'progress' in kwargs
    (s_val, ), (t_val, ) = s_feats.values(), t_feats.values()
    torch.testing.assert_close(s_val, logits_s)
    torch.testing.assert_close(t_val, logits_t)
    assert s_val.requires_grad and s_val.is_leaf and not t_val.requires_grad


def test_measure_memory_keeps_no_teacher_activation(kd_distiller):
    d = kd_distiller
    m = measure(d, 4, (8, 8), 'cpu', iters=1, warmup=1)
    mem = m['memory']
    assert mem['teacher']['saved_for_backward_mb'] == 0
    # What the distillation step keeps beyond the student's step is what the methods keep.
    inputs, samples = make_batch(d, 4, (8, 8), 'cpu')
    with SavedForBackward() as methods_saved:
        for method, (args, kwargs) in zip(d.methods, capture_method_inputs(d, inputs, samples)):
            method(*args, **kwargs)
    assert mem['distill_minus_student_saved_mb'] * 2**20 == pytest.approx(methods_saved.bytes)
    teacher_params = sum(p.numel() for p in d.teacher.parameters())
    assert mem['teacher_weights_mb'] * 2**20 == teacher_params * 4
    assert mem['teacher_taps_mb'] * 2**20 == 4 * d.student.head.num_classes * 4  # (4, 10) logits
    assert mem['method_params_mb'] == 0
    assert 'peak_mb' not in mem['student']  # a CPU peak needs a fresh process (the tool's probe)


def test_measure_modes_times_each_mode_and_leaves_the_distiller_eager(kd_distiller):
    d = kd_distiller
    torch._dynamo.reset()
    modes = measure_modes(
        d,
        4, (8, 8),
        'cpu',
        modes=('eager', 'compile', 'bf16'),
        iters=2,
        warmup=1,
        compile_options=dict(backend='aot_eager'))
    assert list(modes) == ['eager', 'compile', 'bf16']
    for row in modes.values():
        assert row['student']['n'] == row['distill']['n'] == 2
        assert row['student']['median'] > 0 and row['distill']['median'] > 0
    # The compile mode's first calls compile (seconds); its timed steps do not.
    first = modes['compile']['first_call_ms']
    assert first['distill'] > 5 * modes['compile']['distill']['median']
    assert first['student'] > 5 * modes['compile']['student']['median']
    # It compiled a copy: the distiller itself still runs eagerly.
    assert d._compiled_passes is None
    with pytest.raises(ValueError, match='Unknown mode'):
        measure_modes(d, 4, (8, 8), 'cpu', modes=('fp8', ))
