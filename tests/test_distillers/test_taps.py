"""Feature taps: early stop that cannot be swallowed, in-place detection, no hooks left behind."""
import copy

import pytest
import torch
import torch.nn as nn

from mmkd_ext.distillers.taps import FeatureTaps, TapsComplete


class _Swallowing(nn.Module):
    """A forward with a broad ``except Exception`` around a layer, as some model code has."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.ran_b = 0

    def forward(self, x):
        try:
            x = self.a(x)
        except Exception:  # noqa: BLE001 (the point of the test)
            pass
        self.ran_b += 1
        return self.b(x)


def test_early_stop_cannot_be_swallowed_by_except_exception():
    assert not issubclass(TapsComplete, Exception)
    model = _Swallowing()
    taps = FeatureTaps(model, ['a'])
    with taps.record(stop_when_complete=True) as store:
        model(torch.randn(2, 4))
    assert model.ran_b == 0, 'the forward ran on after its last tap'
    assert torch.is_tensor(store['a'])


def test_in_place_change_after_capture_is_an_error_naming_the_tap():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(inplace=True))
    taps = FeatureTaps(model, ['1'])
    with taps.record() as store:
        out = model(torch.randn(8, 4))
    # The ReLU rewrote the BatchNorm output: the tap would silently hold post-ReLU values.
    assert torch.equal(store['1'], out)
    with pytest.raises(RuntimeError, match=r"tap '1' was modified in place"):
        taps.check_unchanged(store)
    # Without the in-place op the same check passes.
    model[2].inplace = False
    with taps.record() as store:
        model(torch.randn(8, 4))
    taps.check_unchanged(store)


def test_no_hook_outlives_a_record_and_deepcopy_copies_none():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    taps = FeatureTaps(model, ['0'])
    with taps.record():
        assert len(model[0]._forward_hooks) == 1
        model(torch.randn(2, 4))
    assert len(model[0]._forward_hooks) == 0
    clone = copy.deepcopy(model)
    assert len(clone[0]._forward_hooks) == 0


def test_compiled_forward_reads_taps_in_one_graph_and_keeps_no_hook():
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    taps = FeatureTaps(model, ['0'])
    forward = torch.compile(model, backend='aot_eager')
    for _ in range(4):
        x = torch.randn(2, 4)
        # The early stop cannot leave a graph: the compiled forward runs whole, once compiled.
        with taps.record(stop_when_complete=True) as store:
            forward(x)
        assert torch.allclose(store['0'], model[0](x))
        taps.check_unchanged(store)
        assert len(model[0]._forward_hooks) == 0
    assert counters['stats']['unique_graphs'] == 1
    assert counters['frames']['total'] == 1
