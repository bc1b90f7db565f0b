"""Each logit loss against its formula, computed by hand with the math module."""
import math

import pytest
import torch
from mmpretrain.structures import DataSample

from mmkd_ext.losses import DKDLoss, HardKDLoss, KDLoss, NKDLoss
from mmkd_ext.losses.base import Progress

Z_S = [[1.0, 2.0, 0.5, -1.0], [0.2, -0.3, 1.5, 0.0]]
Z_T = [[2.5, 0.5, 0.0, -0.5], [-1.0, 0.4, 2.0, 1.0]]
LABELS = [0, 3]


def softmax(row, t=1.0):
    e = [math.exp(v / t) for v in row]
    s = sum(e)
    return [v / s for v in e]


def samples(labels=LABELS):
    return [DataSample().set_gt_label(y) for y in labels]


def call(loss, z_s=Z_S, z_t=Z_T, labels=LABELS):
    return loss(dict(logits=torch.tensor(z_s)), dict(logits=torch.tensor(z_t)), samples(labels))


def test_kd_matches_formula():
    t = 2.0
    expected = 0.0
    for s, tt in zip(Z_S, Z_T):
        p_s, p_t = softmax(s, t), softmax(tt, t)
        expected += sum(pt * (math.log(pt) - math.log(ps)) for ps, pt in zip(p_s, p_t))
    expected = expected / len(Z_S) * t * t * 0.5
    out = call(KDLoss(tau=t, loss_weight=0.5))
    assert list(out) == ['loss_kd']
    assert out['loss_kd'].item() == pytest.approx(expected, rel=1e-5)


def test_kd_zero_for_identical_logits():
    out = call(KDLoss(tau=4.0), z_s=Z_T)
    assert out['loss_kd'].item() == pytest.approx(0.0, abs=1e-6)


def test_hard_kd_matches_formula():
    expected = 0.0
    for s, tt in zip(Z_S, Z_T):
        y = max(range(len(tt)), key=lambda j: tt[j])
        expected += -math.log(softmax(s)[y])
    expected /= len(Z_S)
    out = call(HardKDLoss())
    assert out['loss_hard_kd'].item() == pytest.approx(expected, rel=1e-5)


def nkd_by_hand(gamma, t):
    target = non_target = 0.0
    for s, tt, y in zip(Z_S, Z_T, LABELS):
        target += -softmax(tt)[y] * math.log(softmax(s)[y])
        s_nt = [v for j, v in enumerate(s) if j != y]
        t_nt = [v for j, v in enumerate(tt) if j != y]
        q_s, q_t = softmax(s_nt, t), softmax(t_nt, t)
        non_target += -sum(a * math.log(b) for a, b in zip(q_t, q_s))
    n = len(Z_S)
    return target / n, gamma * t * t * non_target / n


def test_nkd_matches_formula():
    gamma, t = 1.5, 2.0
    target, non_target = nkd_by_hand(gamma, t)
    out = call(NKDLoss(gamma=gamma, tau=t))
    assert out['loss_nkd_target'].item() == pytest.approx(target, rel=1e-5)
    assert out['loss_nkd_non_target'].item() == pytest.approx(non_target, rel=1e-5)


def test_nkd_non_target_term_excludes_the_target_column():
    # Changing only the target logit of both models must not change the non-target term (it is
    # computed without that column), while it does change the target term.
    base = call(NKDLoss())
    z_s = [row[:] for row in Z_S]
    z_t = [row[:] for row in Z_T]
    for i, y in enumerate(LABELS):
        z_s[i][y] += 3.0
        z_t[i][y] -= 2.0
    moved = call(NKDLoss(), z_s=z_s, z_t=z_t)
    assert moved['loss_nkd_non_target'].item() == pytest.approx(
        base['loss_nkd_non_target'].item(), rel=1e-6)
    assert moved['loss_nkd_target'].item() != pytest.approx(base['loss_nkd_target'].item())
    # The bugged variant (target column kept) gives another value on this example.
    full = 0.0
    for s, tt in zip(Z_S, Z_T):
        full += -sum(a * math.log(b) for a, b in zip(softmax(tt), softmax(s)))
    assert base['loss_nkd_non_target'].item() != pytest.approx(full / len(Z_S), rel=1e-3)


def test_nkd_soft_labels_reduce_to_hard_for_one_hot():
    hard = call(NKDLoss())
    soft_samples = [DataSample().set_gt_label(y).set_gt_score(torch.eye(4)[y]) for y in LABELS]
    for mode in ('argmax', 'weighted'):
        soft = NKDLoss(soft_labels=mode)(dict(logits=torch.tensor(Z_S)),
                                         dict(logits=torch.tensor(Z_T)), soft_samples)
        for k in hard:
            assert soft[k].item() == pytest.approx(hard[k].item(), rel=1e-6)


# Mixed labels (Mixup/CutMix): sample 0 is 0.7 class 1 + 0.3 class 2, sample 1 0.4 class 0 +
# 0.6 class 3. The gt_label stays the first image's class (0 and 0), as mmpretrain keeps it.
MIXED = [[0.0, 0.7, 0.3, 0.0], [0.4, 0.0, 0.0, 0.6]]


def mixed_samples():
    return [DataSample().set_gt_label(0).set_gt_score(torch.tensor(m)) for m in MIXED]


def test_nkd_argmax_soft_labels_match_the_reference():
    """cls_KD's nkd.py: label = argmax of the mixed label, used in both terms."""
    gamma, t = 1.5, 2.0
    target = non_target = 0.0
    for s, tt, m in zip(Z_S, Z_T, MIXED):
        y = max(range(4), key=lambda j: m[j])
        target += -softmax(tt)[y] * math.log(softmax(s)[y])
        q_s = softmax([v for j, v in enumerate(s) if j != y], t)
        q_t = softmax([v for j, v in enumerate(tt) if j != y], t)
        non_target += -sum(a * math.log(b) for a, b in zip(q_t, q_s))
    n = len(Z_S)
    loss = NKDLoss(gamma=gamma, tau=t)
    assert loss.soft_labels == 'argmax'  # the reference is the default
    out = loss(dict(logits=torch.tensor(Z_S)), dict(logits=torch.tensor(Z_T)), mixed_samples())
    assert out['loss_nkd_target'].item() == pytest.approx(target / n, rel=1e-5)
    assert out['loss_nkd_non_target'].item() == pytest.approx(
        gamma * t * t * non_target / n, rel=1e-5)


def test_nkd_weighted_soft_labels_weight_the_target_term_by_the_mix():
    target = 0.0
    for s, tt, m in zip(Z_S, Z_T, MIXED):
        p_s, p_t = softmax(s), softmax(tt)
        target += -sum(m[c] * p_t[c] * math.log(p_s[c]) for c in range(4))
    loss = NKDLoss(soft_labels='weighted')
    out = loss(dict(logits=torch.tensor(Z_S)), dict(logits=torch.tensor(Z_T)), mixed_samples())
    assert out['loss_nkd_target'].item() == pytest.approx(target / len(Z_S), rel=1e-5)
    ref = NKDLoss()(dict(logits=torch.tensor(Z_S)), dict(logits=torch.tensor(Z_T)), mixed_samples())
    # Same non-target term (argmax removed), another target term.
    assert out['loss_nkd_non_target'].item() == pytest.approx(
        ref['loss_nkd_non_target'].item(), rel=1e-6)
    assert out['loss_nkd_target'].item() != pytest.approx(ref['loss_nkd_target'].item(), rel=1e-3)
    with pytest.raises(ValueError, match='argmax'):
        NKDLoss(soft_labels='soft')


def dkd_by_hand(alpha, beta, t, labels=LABELS):
    tckd = nckd = 0.0
    for s, tt, y in zip(Z_S, Z_T, labels):
        p_s, p_t = softmax(s, t), softmax(tt, t)
        b_s, b_t = [p_s[y], 1 - p_s[y]], [p_t[y], 1 - p_t[y]]
        tckd += sum(a * math.log(a / b) for a, b in zip(b_t, b_s))
        q_s = softmax([v for j, v in enumerate(s) if j != y], t)
        q_t = softmax([v for j, v in enumerate(tt) if j != y], t)
        nckd += sum(a * math.log(a / b) for a, b in zip(q_t, q_s))
    n = len(Z_S)
    return alpha * t * t * tckd / n, beta * t * t * nckd / n


def test_dkd_matches_formula():
    alpha, beta, t = 1.0, 8.0, 4.0
    tckd, nckd = dkd_by_hand(alpha, beta, t)
    out = call(DKDLoss(alpha=alpha, beta=beta, tau=t))
    assert out['loss_dkd_tckd'].item() == pytest.approx(tckd, rel=1e-5)
    assert out['loss_dkd_nckd'].item() == pytest.approx(nckd, rel=1e-5)


def test_dkd_defaults_are_mdistillers_imagenet_setting():
    loss = DKDLoss()
    assert (loss.alpha, loss.beta, loss.tau, loss.warmup_epochs) == (1.0, 0.5, 1.0, 1)
    tckd, nckd = dkd_by_hand(1.0, 0.5, 1.0)
    out = call(loss)
    assert out['loss_dkd_tckd'].item() == pytest.approx(tckd, rel=1e-5)
    assert out['loss_dkd_nckd'].item() == pytest.approx(nckd, rel=1e-5)
    # WARMUP 1 with epochs counted from 1: factor 1 from the first epoch (no ramp).
    assert loss.warmup_factor(Progress(epoch=0, max_epochs=100)) == 1.0


def test_dkd_warmup_scales_by_epoch():
    """mdistiller: min(epoch / WARMUP, 1), epochs counted from 1 (Progress.epoch counts from 0)."""
    loss = DKDLoss(warmup_epochs=20)
    full = call(DKDLoss(warmup_epochs=0))
    for epoch, factor in ((0, 1 / 20), (1, 2 / 20), (9, 10 / 20), (19, 1.0), (50, 1.0)):
        assert loss.warmup_factor(Progress(epoch=epoch, max_epochs=240)) == pytest.approx(factor)
        warm = loss(
            dict(logits=torch.tensor(Z_S)),
            dict(logits=torch.tensor(Z_T)),
            samples(),
            progress=Progress(epoch=epoch, max_epochs=240))
        for k in ('loss_dkd_tckd', 'loss_dkd_nckd'):
            assert warm[k].item() == pytest.approx(factor * full[k].item(), rel=1e-6)
    assert loss.warmup_factor(None) == 1.0  # outside training: no warm-up


def test_dkd_takes_the_argmax_of_a_mixed_label():
    """Our extension (the reference takes integer labels only): target = argmax of the mix."""
    tckd, nckd = dkd_by_hand(1.0, 0.5, 1.0, labels=[1, 3])
    out = DKDLoss()(dict(logits=torch.tensor(Z_S)), dict(logits=torch.tensor(Z_T)), mixed_samples())
    assert out['loss_dkd_tckd'].item() == pytest.approx(tckd, rel=1e-5)
    assert out['loss_dkd_nckd'].item() == pytest.approx(nckd, rel=1e-5)


def test_logit_losses_are_finite_for_extreme_logits():
    z_s = [[1000.0, -1000.0, 0.0, 0.0], [-500.0, 500.0, 0.0, 0.0]]
    for loss in (KDLoss(), NKDLoss(), DKDLoss(), HardKDLoss()):
        for v in call(loss, z_s=z_s).values():
            assert torch.isfinite(v)


def test_logit_losses_give_gradient_to_student_only():
    z_s = torch.tensor(Z_S, requires_grad=True)
    z_t = torch.tensor(Z_T, requires_grad=True)
    for loss in (KDLoss(), NKDLoss(), DKDLoss(), HardKDLoss()):
        total = sum(loss(dict(logits=z_s), dict(logits=z_t), samples()).values())
        total.backward()
    assert z_s.grad is not None and z_s.grad.abs().sum() > 0
    assert z_t.grad is None
