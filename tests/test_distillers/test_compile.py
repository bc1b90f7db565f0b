"""The distiller under torch.compile and bf16 autocast: compiles do not grow with the steps, the
losses are eager's, the Runner's ``compile=`` compiles the two passes once, with its options."""
import copy
import time

import pytest
import torch
from conftest import KD_CFG, STUDENT_CFG, TEACHER_CFG, tiny_cfg
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.structures import DataSample
from torch._dynamo import register_backend
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.utils import counters

import mmkd_ext  # noqa: F401
from mmkd_ext.distillers import Distiller

# KD and DKD read the head; DKD also reads the epoch (its warm-up), which changes as steps go on.
# The teacher also feeds a FitNet term from layer2, so its pass has a tap before its last.
METHODS = [
    dict(type='KDLoss', tau=4.0),
    dict(type='DKDLoss', warmup_epochs=20),
    dict(
        type='FitNetLoss',
        student_taps=dict(feats='backbone.layer2'),
        teacher_taps=dict(feats='backbone.layer2')),
]


def build_distiller(methods=METHODS, student=STUDENT_CFG):
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    return Distiller(
        student=student, teacher=TEACHER_CFG, input_shape=(1, 8, 8), methods=methods).train()


def batch(seed, size=8):
    """A batch as the digits dataloader gives it: uint8 (1, 8, 8) images and their labels."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (size, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (size, ), generator=g)
    return dict(
        inputs=list(images), data_samples=[DataSample().set_gt_label(int(k)) for k in labels])


def run_steps(model, train_step, steps):
    """``steps`` training steps through ``train_step``, a new epoch and iteration each (what the
    Runner's loops record); returns each step's log variables and the frames compiled after it."""
    hub = MessageHub.get_current_instance()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    logs, frames = [], []
    for i in range(steps):
        hub.update_info('epoch', i)
        hub.update_info('iter', i)
        logs.append({k: float(v.detach()) for k, v in train_step(batch(i), optim).items()})
        frames.append(counters['frames']['total'])
    return logs, frames


def test_compiled_steps_compile_once_and_give_eager_losses():
    eager = build_distiller()
    compiled = copy.deepcopy(eager)  # same weights, shares the teacher
    torch._dynamo.reset()
    counters.clear()
    compiled.compile(backend='aot_eager')
    # What MMEngine's Runner does with compile=True.
    step = torch.compile(compiled.train_step, backend='aot_eager')
    logs, frames = run_steps(compiled, step, steps=8)
    eager_logs, _ = run_steps(eager, eager.train_step, steps=8)
    # The Runner's train_step frame and the two passes are compiled at the first step, one graph
    # each pass; nothing after, although the epoch, the iteration and the weights change at every
    # step (tracing the glue instead compiles over a hundred frames and fails the in-place check).
    assert len(set(frames)) == 1 and frames[0] <= 3, f'frames compiled after each step: {frames}'
    assert counters['stats']['unique_graphs'] == 2
    for i, (c, e) in enumerate(zip(logs, eager_logs)):
        assert c.keys() == e.keys()
        for k in e:
            assert c[k] == pytest.approx(e[k], rel=1e-4, abs=1e-5), f'step {i} {k}'
    # The compiled passes are the distiller's own: a deep copy (EMA) runs eagerly.
    assert copy.deepcopy(compiled)._compiled_passes is None


def test_compiled_teacher_pass_ends_at_its_last_tap():
    distiller = build_distiller(methods=[METHODS[2]])  # the teacher is read at layer2 only
    forward_graphs = []

    def forward_compiler(gm, example_inputs):
        forward_graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    distiller.compile(backend=aot_autograd(fw_compiler=forward_compiler))
    data = distiller.data_preprocessor(batch(0), True)
    feats = distiller.teacher_features(data['inputs'], data['data_samples'])
    eager = copy.deepcopy(distiller).teacher_features(data['inputs'], data['data_samples'])
    assert list(feats) == ['backbone.layer2'] and torch.allclose(feats['backbone.layer2'],
                                                                 eager['backbone.layer2'])
    # One graph, which computes the teacher up to layer2 only: what follows is dead code.
    assert len(forward_graphs) == 1
    convs = sum('convolution' in str(n.target) for n in forward_graphs[0].graph.nodes)
    up_to_tap = [
        n for n, m in distiller.teacher.named_modules()
        if isinstance(m, torch.nn.Conv2d) and n.startswith(('backbone.conv1', 'backbone.layer1',
                                                            'backbone.layer2'))
    ]
    assert convs == len(up_to_tap) == 10
    assert not any('mm' in str(n.target) for n in forward_graphs[0].graph.nodes)  # no head


def test_taps_fire_after_the_student_was_compiled_without_them():
    # mmpretrain's label smoothing breaks the graph inside the head's loss, so the head's frame is
    # compiled on its own: once without the taps' hooks (the student alone, as the benchmark's
    # floor does it), once with them (the distiller's student pass).
    student = Config.fromfile(STUDENT_CFG).model
    student.head.loss = dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    distiller = build_distiller(student=student)
    data = distiller.data_preprocessor(batch(0), True)
    torch._dynamo.reset()
    distiller.compile(backend='aot_eager')
    torch.compile(distiller.student.loss, backend='aot_eager')(data['inputs'], data['data_samples'])
    losses = distiller(**data, mode='loss')
    eager = copy.deepcopy(distiller)(**data, mode='loss')
    assert {
        k: float(v)
        for k, v in losses.items()
    } == pytest.approx({
        k: float(v)
        for k, v in eager.items()
    }, rel=1e-4)


@pytest.mark.parametrize('device', [
    'cpu',
    pytest.param(
        'cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device'))
])
def test_distillation_step_under_bf16_autocast(device):
    distiller = build_distiller().to(device)
    data = distiller.data_preprocessor(batch(0), True)
    dtypes = []
    for model in (distiller.student, distiller.teacher):
        model.head.fc.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    with torch.autocast(device, dtype=torch.bfloat16):
        losses = distiller(**data, mode='loss')
    # Both heads ran in bf16; the terms are finite and back-propagate to the student only.
    assert dtypes == [torch.bfloat16, torch.bfloat16]
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in distiller.student.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in distiller.teacher.parameters())


class CompiledFrames(Hook):
    """Frames compiled so far, and the step's wall time, after every training iteration."""

    def __init__(self):
        self.frames, self.times = [], []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._t0 = time.perf_counter()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.times.append(round(time.perf_counter() - self._t0, 3))
        self.frames.append(counters['frames']['total'])


GRAPHS = []


@register_backend(name='mmkd_test_counting')
def _counting_backend(gm, example_inputs):
    """Runs each traced graph as it is and keeps it in GRAPHS (a config names backends as
    strings: its text must parse back)."""
    GRAPHS.append(gm)
    return gm.forward


def test_runner_compile_compiles_the_passes_once_with_the_configs_options(tmp_path):
    torch._dynamo.reset()
    GRAPHS.clear()
    counters.clear()
    cfg = tiny_cfg(KD_CFG, tmp_path, max_epochs=2, n_train=64, teacher_checkpoint=None)
    cfg.train_dataloader.batch_size = 16
    # compile=True would give the passes inductor, whose code generation takes a minute on two
    # cores; a backend that runs the traced graph as it is compiles in milliseconds.
    cfg.compile = dict(backend='mmkd_test_counting')
    runner = Runner.from_cfg(cfg)
    watch = CompiledFrames()
    runner.register_hook(watch)
    runner.train()
    assert len(watch.frames) == 8
    # The Runner's train_step frame and the two passes, compiled at the first step; nothing after
    # (step times are in the message, for a look: under load they say little).
    assert watch.frames[0] == watch.frames[-1] <= 3, (watch.frames, watch.times)
    # The config's backend compiled the two passes, one graph each.
    assert len(GRAPHS) == counters['stats']['unique_graphs'] == 2
