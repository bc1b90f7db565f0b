"""The distiller core on real mmpretrain models, a real Runner and the digits."""
import os.path as osp

import pytest
import torch
from conftest import KD_CFG, STUDENT_CFG, TEACHER_CFG, tiny_cfg
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import mmkd_ext  # noqa: F401
from mmkd_ext.apis.export import export_student
from mmkd_ext.distillers import Distiller


def build_distiller(**kw):
    init_default_scope('mmpretrain')
    args = dict(
        student=STUDENT_CFG,
        teacher=TEACHER_CFG,
        input_shape=(1, 8, 8),
        methods=[dict(type='KDLoss')])
    args.update(kw)
    return Distiller(**args)


class TeacherWatch(Hook):
    """Records, at every train iteration, the teacher's mode and gradients."""

    def __init__(self):
        self.modes, self.grads = [], []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        teacher = runner.model.teacher
        self.modes.append(any(m.training for m in teacher.modules()))
        self.grads.append(any(p.grad is not None or p.requires_grad for p in teacher.parameters()))


class HeldOutLoss(Hook):
    """The distiller's loss terms on the validation images (eval mode, no gradient), averaged per
    image, measured before and after training."""

    def __init__(self):
        self.measured = []

    @torch.no_grad()
    def measure(self, runner):
        model = runner.model
        model.eval()
        sums, n = {}, 0
        for batch in runner.val_dataloader:
            data = model.data_preprocessor(batch, False)
            b = len(data['data_samples'])
            for k, v in model(**data, mode='loss').items():
                sums[k] = sums.get(k, 0.0) + float(v) * b
            n += b
        model.train()
        self.measured.append({k: v / n for k, v in sums.items()})

    def before_train(self, runner):
        self.measure(runner)

    def after_train(self, runner):
        self.measure(runner)


def test_teacher_frozen_in_eval_through_a_real_epoch(tmp_path, teacher_ckpt):
    cfg = tiny_cfg(KD_CFG, tmp_path, teacher_checkpoint=teacher_ckpt)
    runner = Runner.from_cfg(cfg)
    before = {k: v.clone() for k, v in runner.model.teacher.state_dict().items()}
    watch, held_out = TeacherWatch(), HeldOutLoss()
    runner.register_hook(watch)
    runner.register_hook(held_out)
    runner.train()
    assert watch.modes and not any(watch.modes), 'teacher was in train mode during training'
    assert not any(watch.grads), 'teacher parameters got gradients'
    after = runner.model.teacher.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), f'teacher entry {k} changed (BN statistics or weights)'
    # The student did learn from the teacher: on images it never trained on, the KD term is
    # clearly lower after the epoch (its 4 steps lowered it by 10-25 % for seeds 0-2; they do not
    # move the task loss reliably), and the task loss is logged apart from it.
    start, end = held_out.measured
    assert len(start) == 2 and 'loss_kd' in start, start
    assert end['loss_kd'] < 0.95 * start['loss_kd'], held_out.measured


def test_teacher_not_in_parameters_or_state_dict():
    d = build_distiller()
    names = [n for n, _ in d.named_parameters()]
    assert names and all(n.startswith(('student.', 'methods.')) for n in names)
    assert not any(k.startswith('teacher') for k in d.state_dict())
    d.train()
    assert not d.teacher.training and d.student.training


def test_wrong_tap_path_names_near_matches():
    with pytest.raises(KeyError) as e:
        build_distiller(
            methods=[dict(type='KDLoss', student_taps=dict(logits='backbone.layers.1'))])
    msg = str(e.value)
    assert "The student has no module at path 'backbone.layers.1'" in msg
    assert 'backbone.layer1' in msg.split('Closest')[1]  # the near match is offered
    assert 'list_taps' in msg


def test_tap_shapes_inferred_by_dry_run():
    from mmkd_ext.losses import DistillLoss
    from mmkd_ext.registry import MODELS
    seen = {}

    @MODELS.register_module(force=True)
    class _ShapeProbe(DistillLoss):
        default_student_taps = dict(feat='backbone.layer4', logits='head')
        default_teacher_taps = dict(feat='backbone.layer4', logits='head')

        def setup(self, student_shapes, teacher_shapes, student, teacher):
            seen.update(s=student_shapes, t=teacher_shapes)
            self.proj = torch.nn.Conv2d(student_shapes['feat'][0], teacher_shapes['feat'][0], 1)

        def forward(self, s, t, data_samples=None, progress=None):
            return {'loss_probe': (self.proj(s['feat']) - t['feat']).pow(2).mean()}

    d = build_distiller(methods=[dict(type='_ShapeProbe')])
    assert seen['s'] == {'feat': (32, 1, 1), 'logits': (10, )}
    assert seen['t'] == {'feat': (256, 1, 1), 'logits': (10, )}
    assert any(n.startswith('methods.0.proj') for n, _ in d.named_parameters())


def test_teacher_stops_after_its_last_tap():
    d = build_distiller()
    called = []
    h = d.teacher.head.register_forward_hook(lambda *a: called.append('head'))
    from mmkd_ext.distillers.taps import FeatureTaps
    d.teacher_taps = FeatureTaps(d.teacher, ['backbone.layer1'], 'teacher')
    d.teacher_features(torch.zeros(2, 1, 8, 8))
    h.remove()
    assert called == [], 'the teacher ran its head although no method reads it'


def test_unusable_teacher_checkpoint_is_an_error(tmp_path):
    bad = tmp_path / 'bad.pth'
    torch.save({'state_dict': {'foo.weight': torch.zeros(3, 3)}}, bad)
    with pytest.raises(ValueError, match='does not belong to this teacher'):
        build_distiller(teacher_checkpoint=str(bad))
    # The student's weights are not the teacher's: mostly mis-shaped -> also an error.
    student = build_distiller().student
    wrong = tmp_path / 'student.pth'
    torch.save({'state_dict': student.state_dict()}, wrong)
    with pytest.raises(ValueError, match='Mis-shaped'):
        build_distiller(teacher_checkpoint=str(wrong))


def test_teacher_checkpoint_report_and_prefixes(tmp_path, teacher_ckpt):
    ckpt = torch.load(teacher_ckpt, weights_only=False)
    wrapped = {'model': {'module.' + k: v for k, v in ckpt['state_dict'].items()}}
    path = tmp_path / 'wrapped.pth'
    torch.save(wrapped, path)
    d = build_distiller(teacher_checkpoint=str(path))
    assert d.teacher_report['missing'] == [] and d.teacher_report['unexpected'] == []
    for k, v in ckpt['state_dict'].items():
        assert torch.equal(d.teacher.state_dict()[k], v)


def test_predict_and_tensor_modes_are_the_student():
    d = build_distiller().eval()
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(d(x, mode='tensor'), d.student(x, mode='tensor'))


def test_checkpoint_export_loads_into_plain_classifier(tmp_path, teacher_ckpt):
    cfg = tiny_cfg(KD_CFG, tmp_path / 'kd', teacher_checkpoint=teacher_ckpt)
    runner = Runner.from_cfg(cfg)
    runner.train()
    ckpt_path = osp.join(cfg.work_dir, 'epoch_1.pth')
    ckpt = torch.load(ckpt_path, weights_only=False)
    assert ckpt['state_dict'] and not any('teacher' in k for k in ckpt['state_dict'])

    out = tmp_path / 'student.pth'
    export_student(ckpt_path, str(out))
    from mmengine.config import Config
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    plain = PRETRAIN_MODELS.build(Config.fromfile(STUDENT_CFG).model)
    state = torch.load(out, weights_only=True)['state_dict']
    result = plain.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(2, 1, 8, 8)
    runner.model.eval()
    plain.eval()
    assert torch.allclose(plain(x, mode='tensor'), runner.model(x, mode='tensor'))

    # A distiller rebuilt from its config loads the checkpoint (the teacher comes from its own).
    from mmkd_ext.apis import build_runner
    tester = build_runner(
        tiny_cfg(KD_CFG, tmp_path / 'test', teacher_checkpoint=teacher_ckpt), load_from=ckpt_path)
    metrics = tester.test()
    # ...and tests the student: its top-1 is the exported classifier's, counted here by hand.
    hits = total = 0
    with torch.no_grad():
        for batch in tester.test_dataloader:
            data = plain.data_preprocessor(batch, False)
            pred = plain(data['inputs'], mode='tensor').argmax(1)
            hits += int((pred == torch.cat([d.gt_label for d in data['data_samples']])).sum())
            total += len(pred)
    assert total == 60
    assert metrics['accuracy/top1'] == pytest.approx(100.0 * hits / total)


class LossRecorder(Hook):

    def __init__(self):
        self.losses = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append(
            (runner.epoch, batch_idx, float(outputs['loss']), float(outputs['loss_kd'])))


class SimulatedKill(Exception):
    pass


class Crash(Hook):
    """Kills training right after the first epoch's checkpoint has been written."""

    def after_train_epoch(self, runner):
        if runner.epoch == 0:  # the loop increments the epoch after this hook
            raise SimulatedKill


def test_kill_and_resume_continues_with_the_same_losses(tmp_path, teacher_ckpt):

    def run(work, hooks, resume=False):
        cfg = tiny_cfg(KD_CFG, work, max_epochs=2, augment=False, teacher_checkpoint=teacher_ckpt)
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
    assert osp.isfile(tmp_path / 'killed' / 'epoch_1.pth')
    resumed = LossRecorder()
    runner = run(tmp_path / 'killed', [resumed], resume=True)
    runner.train()
    assert [r[:2] for r in resumed.losses] == [r[:2] for r in full.losses if r[0] == 1]
    expected = [r for r in full.losses if r[0] == 1]
    for got, want in zip(resumed.losses, expected):
        assert got[2] == pytest.approx(want[2], rel=1e-4, abs=1e-6)
        assert got[3] == pytest.approx(want[3], rel=1e-4, abs=1e-6)


def test_ema_hook_works_with_the_distiller(tmp_path, teacher_ckpt):
    # SpectralKD's recipe keeps an EMA of the model: the averaged copy must be the student's and
    # the checkpoint must still hold no teacher.
    cfg = tiny_cfg(KD_CFG, tmp_path, teacher_checkpoint=teacher_ckpt)
    cfg.custom_hooks = [dict(type='EMAHook', momentum=0.01, priority='ABOVE_NORMAL')]
    runner = Runner.from_cfg(cfg)
    runner.train()
    ckpt = torch.load(osp.join(cfg.work_dir, 'epoch_1.pth'), weights_only=False)
    assert ckpt['ema_state_dict']
    assert not any('teacher' in k for k in ckpt['ema_state_dict'])
    assert not any('teacher' in k for k in ckpt['state_dict'])


def test_deepcopy_and_ema_share_the_teacher(tmp_path, teacher_ckpt):
    import copy
    d = build_distiller(teacher_checkpoint=teacher_ckpt)
    clone = copy.deepcopy(d)
    assert clone.teacher is d.teacher
    assert clone.student is not d.student
    assert all(a.data_ptr() != b.data_ptr()
               for a, b in zip(clone.student.parameters(), d.student.parameters()))
    # The copy is a working distiller of its own: its taps read its own student.
    x = torch.zeros(2, 1, 8, 8)
    with clone.student_taps.record() as store:
        clone.student(x, mode='tensor')
    assert store['head'] is not None

    # Through MMEngine's EMAHook in a real run: one teacher in memory, not two.
    cfg = tiny_cfg(KD_CFG, tmp_path, teacher_checkpoint=teacher_ckpt)
    cfg.custom_hooks = [dict(type='EMAHook', momentum=0.01, priority='ABOVE_NORMAL')]
    runner = Runner.from_cfg(cfg)
    runner.train()
    ema = next(h for h in runner.hooks if type(h).__name__ == 'EMAHook').ema_model.module
    model = runner.model
    assert ema.teacher is model.teacher
    storages = {
        p.untyped_storage().data_ptr()
        for m in (ema, model)
        for p in m.teacher.parameters()
    }
    assert len(storages) == len(list(model.teacher.parameters()))


def test_teacher_with_checkpoint_does_not_fetch_its_pretrained_init(teacher_ckpt):
    from mmengine.config import Config
    teacher = Config.fromfile(TEACHER_CFG).model
    # Nothing listens on this port: any attempt to fetch it fails at once.
    teacher.backbone.init_cfg = dict(
        type='Pretrained', checkpoint='http://127.0.0.1:9/imagenet.pth')
    d = build_distiller(teacher=teacher, teacher_checkpoint=teacher_ckpt)
    state = torch.load(teacher_ckpt, weights_only=False)['state_dict']
    assert all(torch.equal(d.teacher.state_dict()[k], v) for k, v in state.items())
    # Without a checkpoint the same init_cfg is honoured (and so fails offline): the test can fail.
    with pytest.raises(Exception):
        build_distiller(teacher=teacher)


def test_methods_get_the_training_progress(tmp_path, teacher_ckpt):
    from mmkd_ext.losses import DistillLoss
    from mmkd_ext.registry import MODELS
    seen = []

    @MODELS.register_module(force=True)
    class _ProgressProbe(DistillLoss):
        default_student_taps = dict(logits='head')
        default_teacher_taps = dict(logits='head')
        default_name = 'progress_probe'

        def forward(self, s, t, data_samples=None, progress=None):
            seen.append(progress)
            return {self.term(): s['logits'].sum() * 0}

    cfg = tiny_cfg(KD_CFG, tmp_path, max_epochs=2, n_train=64, teacher_checkpoint=teacher_ckpt)
    cfg.model.methods = [dict(type='_ProgressProbe')]
    Runner.from_cfg(cfg).train()
    assert [p.epoch for p in seen] == [0, 0, 1, 1]
    assert [p.iter for p in seen] == [0, 1, 2, 3]
    assert {p.max_epochs for p in seen} == {2} and {p.max_iters for p in seen} == {4}


def test_teacher_gets_its_own_normalisation():
    from mmengine.config import Config
    init_default_scope('mmpretrain')

    def rgb_net(width, mean, std, to_rgb):
        net = Config.fromfile(TEACHER_CFG).model
        net.backbone.update(in_channels=3, stem_channels=width, base_channels=width)
        net.head.in_channels = 8 * width
        net.data_preprocessor = dict(num_classes=10, mean=mean, std=std, to_rgb=to_rgb)
        return net

    student = rgb_net(4, [120.0, 110.0, 100.0], [60.0, 55.0, 50.0], True)
    teacher = rgb_net(8, [0.0, 10.0, 20.0], [255.0, 128.0, 64.0], False)
    d = Distiller(
        student=student, teacher=teacher, input_shape=(3, 8, 8), methods=[dict(type='KDLoss')])
    from mmpretrain.structures import DataSample
    data = dict(
        inputs=[torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8) for _ in range(3)],
        data_samples=[DataSample().set_gt_label(0) for _ in range(3)])
    x_s = d.data_preprocessor(data, False)['inputs']
    expected = d.teacher.data_preprocessor(data, False)['inputs']
    assert not torch.allclose(x_s, expected)
    assert torch.allclose(d.teacher_inputs(x_s), expected, atol=1e-4)
    # Equal normalisations: the batch goes through untouched.
    same = Distiller(
        student=student,
        teacher=rgb_net(8, [120.0, 110.0, 100.0], [60.0, 55.0, 50.0], True),
        input_shape=(3, 8, 8),
        methods=[dict(type='KDLoss')])
    assert same.teacher_inputs(x_s) is x_s
