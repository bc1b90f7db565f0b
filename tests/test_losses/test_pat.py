"""PAT on real (narrow) mmpretrain models: the hierarchical context loss, the clean and the prompted
teacher passes, gradients, checkpoints, feedback across steps and a killed-and-resumed run."""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from conftest import KD_CFG, tiny_cfg
from mmengine.hooks import Hook
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import mmkd_ext  # noqa: F401
from mmkd_ext.apis.export import export_student
from mmkd_ext.distillers import Distiller
from mmkd_ext.losses import HierarchicalContextLoss, PATLoss
from mmkd_ext.losses.base import kl_div_with_temperature
from mmkd_ext.utils.tokens import map_to_tokens, tokens_to_map

IMG, CLASSES = 32, 5
RESNET_STAGES = [f'backbone.layer{i}' for i in range(1, 5)]
VIT_STAGES = [f'backbone.layers.{i}' for i in range(4)]


def classifier(backbone, width, head='LinearClsHead', neck=True):
    return dict(
        type='ImageClassifier',
        _scope_='mmpretrain',
        backbone=backbone,
        neck=dict(type='GlobalAveragePooling') if neck else None,
        # (mmpretrain's ViT head starts at zero: every logit 0 whatever the features)
        head=dict(
            type=head,
            num_classes=CLASSES,
            in_channels=width,
            init_cfg=dict(type='Normal', layer='Linear', std=0.1)))


def resnet():
    return classifier(
        dict(type='ResNet', depth=18, stem_channels=8, base_channels=8, out_indices=(3, )), 64)


def convnext():
    return classifier(
        dict(type='ConvNeXt', arch=dict(depths=[1, 1, 1, 1], channels=[8, 16, 32, 64])),
        64,
        neck=False)  # mmpretrain's ConvNeXt pools itself


def swin():
    return classifier(
        dict(
            type='SwinTransformer',
            arch=dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8]),
            img_size=IMG,
            window_size=2,
            pad_small_map=True), 128)


def vit(width=16):
    return classifier(
        dict(
            type='VisionTransformer',
            img_size=IMG,
            patch_size=4,
            arch=dict(embed_dims=width, num_layers=4, num_heads=2, feedforward_channels=2 * width)),
        width,
        head='VisionTransformerClsHead',
        neck=False)


TEACHERS = {
    'resnet': (resnet, dict(stages=RESNET_STAGES)),
    'convnext': (convnext, dict(stages=[f'backbone.stages.{i}' for i in range(4)])),
    # prompts where each stage starts: mmpretrain's ConvNeXt downsamples outside its stages
    'convnext_sites': (convnext, dict(stages=[f'backbone.stages.{i}' for i in range(4)])),
    'swin': (swin, dict(stages=[f'backbone.stages.{i}.blocks.1' for i in range(4)])),
    'vit': (lambda: vit(32), dict(stages=VIT_STAGES, grid='backbone.patch_embed')),
}
STUDENTS = {
    'resnet': (resnet, dict(stages=RESNET_STAGES)),
    'vit': (vit, dict(stages=VIT_STAGES, grid='backbone.patch_embed')),
}


def distiller(teacher='resnet', student='resnet', gate_init=0.0, extra_methods=(), **pat):
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    t_model, t_taps = TEACHERS[teacher]
    s_model, s_taps = STUDENTS[student]
    method = dict(
        type='PATLoss',
        student_taps=s_taps,
        teacher_taps=t_taps,
        raa=dict(embed_dims=32, num_heads=4),
        prompt=dict(gate_init=gate_init, se_ratio=4))
    if teacher == 'convnext_sites':
        method['prompt_paths'] = ['backbone.stages.0'
                                  ] + [f'backbone.downsample_layers.{i}' for i in range(1, 4)]
    method.update(pat)
    return Distiller(
        student=s_model(),
        teacher=t_model(),
        input_shape=(3, IMG, IMG),
        methods=[method, *extra_methods])


def batch(seed=0, n=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, IMG, IMG, generator=g)


def samples(n=2):
    from mmpretrain.structures import DataSample
    return [DataSample().set_gt_label(i % CLASSES) for i in range(n)]


def clean_run(teacher, x, paths):
    """The teacher's outputs at ``paths`` on ``x``: a plain no_grad forward (no loss involved)."""
    out, handles = {}, []
    for p in paths:
        handles.append(
            teacher.get_submodule(p).register_forward_hook(
                lambda m, a, o, p=p: out.update({p: out.get(p, o)})))
    with torch.no_grad():
        out['logits'] = teacher(x, mode='tensor')
    for h in handles:
        h.remove()
    return out


def as_tensor(v):
    return v[0] if isinstance(v, (tuple, list)) else v


# --------------------------------------------------------------------------------------- HCL
def direct_hcl(a, b):
    """The formula written out level by level (weights 1, 1/2, 1/4, 1/8 over the levels l < H)."""
    terms, weights, w = [((a - b)**2).mean()], [1.0], 1.0
    for size in (4, 2, 1):
        if size < a.shape[2]:
            w /= 2
            pa = torch.stack([
                torch.stack([
                    a[:, :, (i * a.shape[2]) // size:-(-(i + 1) * a.shape[2] // size),
                      (j * a.shape[3]) // size:-(-(j + 1) * a.shape[3] // size)].mean((2, 3))
                    for j in range(size)
                ], -1) for i in range(size)
            ], -2)
            pb = torch.stack([
                torch.stack([
                    b[:, :, (i * b.shape[2]) // size:-(-(i + 1) * b.shape[2] // size),
                      (j * b.shape[3]) // size:-(-(j + 1) * b.shape[3] // size)].mean((2, 3))
                    for j in range(size)
                ], -1) for i in range(size)
            ], -2)
            terms.append(((pa - pb)**2).mean())
            weights.append(w)
    return sum(t * w for t, w in zip(terms, weights)) / sum(weights)


@pytest.mark.parametrize('side', [7, 4, 2, 1])
def test_hcl_against_a_direct_recomputation(side):
    torch.manual_seed(side)
    a, b = torch.randn(2, 3, side, side), torch.randn(2, 3, side, side)
    got = HierarchicalContextLoss()(a, b)
    assert torch.allclose(got, direct_hcl(a, b), rtol=1e-5, atol=1e-7)
    if side == 7:  # every level: the published formula
        p = F.adaptive_avg_pool2d
        want = (F.mse_loss(a, b) + F.mse_loss(p(a, 4), p(b, 4)) / 2 +
                F.mse_loss(p(a, 2), p(b, 2)) / 4 + F.mse_loss(p(a, 1), p(b, 1)) / 8) / 1.875
        assert torch.allclose(got, want)
    if side == 1:
        assert torch.allclose(got, F.mse_loss(a, b))
    # Tokens (B, h*w, C) are laid on their grid first.
    tokens = HierarchicalContextLoss()(map_to_tokens(a), map_to_tokens(b), grid=(side, side))
    assert torch.allclose(tokens, got)


# --------------------------------------------------------------------------------------- passes
@pytest.mark.parametrize('teacher', ['resnet', 'convnext', 'convnext_sites', 'swin', 'vit'])
def test_prompted_teacher_at_gate_zero_is_exactly_the_teacher(teacher):
    d = distiller(teacher=teacher).train()
    loss = d.methods[0]
    paths = loss.tap_paths('teacher', 'stages')
    x0, x = batch(0), batch(1)
    d.loss(x0, samples())  # step 1 leaves feedback
    assert all(b.has_feedback for b in loss.prompts.values())
    calls = []
    for block in loss.prompts.values():
        block.register_forward_hook(lambda m, a, o: calls.append(m))
    clean = clean_run(d.teacher, x, paths)
    grid = clean_run(d.teacher, x, ['backbone.patch_embed'])['backbone.patch_embed'][1] \
        if teacher == 'vit' else None
    store = loss.prompted_pass(x, grid)
    assert len(calls) == 4, 'the prompts did not run'
    if teacher == 'convnext_sites':  # prompts as wide as the sites' inputs: 8, 8, 16, 32
        assert [b.channels for b in loss.prompts.values()] == [8, 8, 16, 32]
    assert not d.teacher.training
    assert store['logits'].requires_grad  # autograd through the frozen layers
    assert torch.equal(store['logits'], clean['logits'])
    for p, out in zip(paths, store['stages']):
        assert torch.equal(as_tensor(out), as_tensor(clean[p])), p
    # With the gate open the same pass differs: the comparison above can fail.
    with torch.no_grad():
        for block in loss.prompts.values():
            block.gate.fill_(0.5)
    store = loss.prompted_pass(x, grid)
    assert not torch.equal(store['logits'], clean['logits'])
    assert not torch.equal(as_tensor(store['stages'][-1]), as_tensor(clean[paths[-1]]))


def test_cls_token_is_the_first_token_and_passes_unchanged():
    d = distiller(teacher='vit', gate_init=0.5).train()
    loss = d.methods[0]
    d.loss(batch(0), samples())
    x = batch(1)
    seen = {}
    ln = d.teacher.get_submodule('backbone.layers.1.ln1')  # the first op of block 1 sees its input
    handle = ln.register_forward_pre_hook(lambda m, a: seen.update(x=a[0].detach()))
    grid = (IMG // 4, IMG // 4)
    store = loss.prompted_pass(x, grid)
    handle.remove()
    given, used = store['inputs'][1].detach(), seen['x']
    assert given.shape == used.shape == (2, 1 + 64, 32)
    assert torch.equal(used[:, 0], given[:, 0]), 'the class token (first) was prompted'
    assert not torch.equal(used[:, -1], given[:, -1])
    block = loss.prompts['1']
    with torch.no_grad():
        want = map_to_tokens(block(tokens_to_map(given[:, 1:], grid), block.feedback))
    assert torch.allclose(used[:, 1:], want, atol=1e-6)


def test_clean_pass_is_the_teacher_and_other_methods_read_it():
    d = distiller(gate_init=0.5, extra_methods=[dict(type='KDLoss', tau=1.0)]).train()
    d.loss(batch(0), samples())  # feedback: the prompts act from now on
    x = batch(1)
    clean = clean_run(d.teacher, x, RESNET_STAGES)
    store = d.teacher_features(x)  # the distiller's own (clean) pass
    for p in RESNET_STAGES:
        assert torch.equal(store[p], clean[p]) and not store[p].requires_grad
    assert torch.equal(store['head'], clean['logits'])
    seen = {}
    kd = d.methods[1]
    kd.register_forward_pre_hook(lambda m, a: seen.update(t=a[1]['logits']))
    losses = d.loss(x, samples())
    assert torch.equal(seen['t'], clean['logits'])
    # The KD term and PAT's own KL are against the clean teacher...
    with torch.no_grad():
        s_logits = d.student(x, mode='tensor')
    want = kl_div_with_temperature(s_logits, clean['logits'], 1.0)
    assert torch.allclose(losses['loss_kd'], want, rtol=1e-5)
    assert torch.allclose(losses['loss_pat_kl'], want, rtol=1e-5)
    # ...while the prompted teacher differs from it (its regulariser is not zero).
    assert losses['loss_pat_reg'] > 0


# ------------------------------------------------------------------------------ gradients, state
def test_gradients_reach_the_method_never_the_teacher_nor_its_state():
    d = distiller(teacher='vit', student='resnet').train()
    loss = d.methods[0]
    d.loss(batch(0), samples())
    with torch.no_grad():  # as after some training: the gates have moved off 0
        for block in loss.prompts.values():
            block.gate.fill_(0.3)
    losses = d.loss(batch(1), samples())
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert all(p.grad is None and not p.requires_grad for p in d.teacher.parameters())
    for name, p in loss.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for part in ('raa.embeds', 'raa.to_q', 'raa.aligners', 'prompts.0.fusion', 'prompts.3.prompt',
                 'prompts.2.gate'):
        assert any(n.startswith(part) for n, _ in loss.named_parameters()), part

    teacher_ids = {id(p) for p in d.teacher.parameters()}
    teacher_ptrs = {p.data_ptr() for p in d.teacher.parameters()}
    state = d.state_dict()
    assert not any('teacher' in k and 'fingerprint' not in k for k in state), list(state)
    assert not any(v.data_ptr() in teacher_ptrs for v in state.values() if v.numel())
    n_teacher = sum(p.numel() for p in d.teacher.parameters())
    n_state = sum(v.numel() for k, v in state.items() if not k.endswith('_extra_state'))
    n_own = sum(v.numel() for v in d.student.state_dict().values()) + sum(
        v.numel() for k, v in loss.state_dict().items() if not k.endswith('_extra_state'))
    assert n_state == n_own and n_teacher > 0
    optim = build_optim_wrapper(d, dict(optimizer=dict(type='SGD', lr=0.1)))
    in_optim = {id(p) for g in optim.optimizer.param_groups for p in g['params']}
    assert in_optim and not in_optim & teacher_ids
    assert {id(p) for p in loss.parameters()} <= in_optim


def test_export_holds_the_student_only(tmp_path):
    d = distiller().train()
    d.loss(batch(0), samples())
    src, dst = str(tmp_path / 'distill.pth'), str(tmp_path / 'student.pth')
    torch.save(dict(state_dict=d.state_dict(), meta=dict(epoch=1)), src)
    out = export_student(src, dst)
    assert set(out['state_dict']) == set(d.student.state_dict())


# ------------------------------------------------------------------------------ feedback
def test_feedback_of_step_k_is_used_at_step_k_plus_1_and_checkpointed():
    d = distiller(teacher='swin', student='vit', gate_init=0.5).train()
    loss = d.methods[0]
    pairs, received = [], []
    hcl = loss.hcl.forward
    loss.hcl.forward = lambda a, t, grid=None: pairs.append((a.detach(), t.detach())) or hcl(a, t)
    for key, block in loss.prompts.items():
        block.register_forward_pre_hook(lambda m, a, key=key: received.append((key, a[1])))
    d.loss(batch(0), samples())
    assert received == [], 'a prompt ran at the first step, without feedback'
    step1 = [a - t for a, t in pairs]
    for key, block in loss.prompts.items():
        assert torch.equal(block.feedback, step1[int(key)])
    pairs.clear()
    d.loss(batch(1, n=3), samples(3))  # another batch (of another size)
    assert [k for k, _ in received] == ['0', '1', '2', '3']
    for key, fb in received:
        assert torch.equal(fb, step1[int(key)])
    step2 = [a - t for a, t in pairs]
    assert not torch.equal(step2[0][:2], step1[0])
    # The feedback is in the state dict and a new distiller takes it from there.
    state = d.state_dict()
    assert torch.equal(state['methods.0.prompts.2._extra_state'], step2[2])
    fresh = distiller(teacher='swin', student='vit', gate_init=0.5)
    assert not any(b.has_feedback for b in fresh.methods[0].prompts.values())
    fresh.load_state_dict(state)
    for key, block in fresh.methods[0].prompts.items():
        assert torch.equal(block.feedback, step2[int(key)])
    # Evaluation (a validation loss) leaves the feedback alone.
    d.eval()
    d.loss(batch(2), samples())
    assert torch.equal(loss.prompts['0'].feedback, step2[0])


class LossRecorder(Hook):

    def __init__(self):
        self.losses = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append((runner.epoch, batch_idx, float(outputs['loss']),
                            float(outputs['loss_pat_hcl']), float(outputs['loss_pat_reg'])))


class SimulatedKill(Exception):
    pass


class Crash(Hook):

    def after_train_epoch(self, runner):
        if runner.epoch == 0:
            raise SimulatedKill


def test_kill_and_resume_continues_with_the_same_losses(tmp_path, teacher_ckpt):
    pat = dict(
        type='PATLoss',
        raa=dict(embed_dims=32, num_heads=4),
        prompt=dict(gate_init=0.5, se_ratio=4))  # gate open: the feedback changes the losses

    def run(work, hooks, resume=False):
        cfg = tiny_cfg(
            KD_CFG,
            work,
            max_epochs=2,
            n_train=64,
            augment=False,
            teacher_checkpoint=teacher_ckpt,
            methods=[pat])
        cfg.resume = resume
        runner = Runner.from_cfg(cfg)
        for h in hooks:
            runner.register_hook(h, priority='LOWEST')
        return runner

    full = LossRecorder()
    run(tmp_path / 'full', [full]).train()
    part = LossRecorder()
    with pytest.raises(SimulatedKill):
        run(tmp_path / 'killed', [part, Crash()]).train()
    ckpt = torch.load(osp.join(tmp_path, 'killed', 'epoch_1.pth'), weights_only=False)
    feedback = ckpt['state_dict']['methods.0.prompts.0._extra_state']
    assert feedback.dim() == 4 and feedback.abs().sum() > 0
    resumed = LossRecorder()
    run(tmp_path / 'killed', [resumed], resume=True).train()
    expected = [r for r in full.losses if r[0] == 1]
    assert [r[:2] for r in resumed.losses] == [r[:2] for r in expected] and expected
    for got, want in zip(resumed.losses, expected):
        assert got[2:] == pytest.approx(want[2:], rel=1e-4, abs=1e-6)


def test_bad_configuration_is_a_clear_error():
    with pytest.raises(ValueError, match='pairs stages'):
        PATLoss(teacher_taps=dict(stages=RESNET_STAGES[:3]))
    with pytest.raises(ValueError, match='prompt_stages'):
        PATLoss(prompt_stages=[4])
    d = distiller()
    with pytest.raises(RuntimeError, match='has not run'):
        loss = d.methods[0]
        loss._teacher_input = None
        loss({
            'stages': [torch.zeros(2, 8, 8, 8)] * 4,
            'logits': torch.zeros(2, CLASSES)
        }, {
            'stages': [torch.zeros(2, 8, 8, 8)] * 4,
            'logits': torch.zeros(2, CLASSES)
        })
