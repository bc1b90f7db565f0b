"""mmkd_ext.MobileNetV1 against the architecture table (parameter count computed by hand, stage
shapes) and against timm's mobilenetv1_100 on the same random weights (convert_timm_mobilenet_v1,
also as tools/model_converters/timm_mobilenet_v1_to_mmkd.py)."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

import mmkd_ext  # noqa: F401

# The paper's Table 1, independently of the module: (input channels, output channels, stride) of
# the 13 depthwise-separable blocks after the 3x3 stride-2 stem conv 3 -> 32.
TABLE = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)] + \
    [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]


def hand_count(num_classes=1000):
    """Parameters (weights, BN gains and biases; no conv biases) from the table."""
    n = 3 * 32 * 9 + 2 * 32  # stem conv + BN
    for cin, cout, _ in TABLE:
        n += cin * 9 + 2 * cin  # depthwise 3x3 + BN
        n += cin * cout + 2 * cout  # pointwise 1x1 + BN
    return n + 1024 * num_classes + num_classes  # linear classifier


def classifier(num_classes=1000, **backbone):
    from mmpretrain.registry import MODELS
    return MODELS.build(
        dict(
            type='ImageClassifier',
            _scope_='mmpretrain',
            backbone=dict(type='mmkd_ext.MobileNetV1', **backbone),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=1024)))


def test_parameter_count_matches_the_table():
    model = classifier()
    assert sum(p.numel() for p in model.parameters()) == hand_count() == 4_231_976
    backbone = sum(p.numel() for p in model.backbone.parameters())
    assert backbone == hand_count() - 1_025_000  # 3.2 M without the classifier
    assert 3.2e6 < backbone < 3.21e6


@pytest.mark.parametrize('size', [224, 97])
def test_stage_shapes(size):
    from mmkd_ext.models.backbones import MobileNetV1
    model = MobileNetV1(out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, size, size))
    side = size
    for _ in range(2):  # stem and layer1 halve it
        side = (side + 1) // 2
    expected = []
    for channels in (128, 256, 512, 1024):
        expected.append((1, channels, side, side))
        side = (side + 1) // 2
    assert [tuple(o.shape) for o in outs] == expected
    if size == 224:
        assert expected[2][2:] == (14, 14) and expected[3][2:] == (7, 7)  # C4, C5


def test_widen_factor_and_options():
    from mmkd_ext.models.backbones import MobileNetV1
    model = MobileNetV1(widen_factor=0.25, out_indices=-1)
    assert model.out_channels == [32, 64, 128, 256]
    assert model(torch.randn(2, 3, 32, 32))[0].shape == (2, 256, 1, 1)
    frozen = MobileNetV1(frozen_stages=1)
    frozen.train()
    assert not any(p.requires_grad for p in frozen.stem.parameters())
    assert not any(p.requires_grad for p in frozen.layer1.parameters())
    assert all(p.requires_grad for p in frozen.layer2.parameters())
    assert not frozen.layer1[0].depthwise_conv.bn.training and frozen.layer2.training
    with pytest.raises(ValueError, match='out_indices'):
        MobileNetV1(out_indices=(4, ))
    with pytest.raises(ValueError, match='frozen_stages'):
        MobileNetV1(frozen_stages=7)


@pytest.fixture(scope='module')
def timm_pair():
    """timm's mobilenetv1_100 with ReLU and every parameter and BN statistic random, and ours
    with its weights converted."""
    timm = pytest.importorskip('timm')
    from mmkd_ext.models.backbones.mobilenet_v1 import convert_timm_mobilenet_v1
    torch.manual_seed(0)
    ref = timm.create_model('mobilenetv1_100', pretrained=False, num_classes=10, act_layer='relu')
    with torch.no_grad():
        for name, t in ref.state_dict().items():
            if name.endswith('running_var'):
                t.uniform_(0.5, 2.0)
            elif name.endswith('running_mean') or name.endswith('bias'):
                t.normal_(0, 0.1)
            elif t.is_floating_point():
                fan_in = t[0].numel() if t.dim() > 1 else 1
                t.normal_(0, (2.0 / fan_in)**0.5 if t.dim() > 1 else 0.2)
                if t.dim() == 1:
                    t.add_(1.0)  # BN gains around one
    ours = classifier(num_classes=10)
    # strict: the converted keys are exactly the classifier's, none missing, none left over.
    ours.load_state_dict(convert_timm_mobilenet_v1(ref.state_dict()), strict=True)
    return ref.eval(), ours.eval()


def test_equals_timm_on_the_same_weights(timm_pair):
    ref, ours = timm_pair
    x = torch.randn(2, 3, 96, 80, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref_feat = ref.forward_features(x)
        our_feat = ours.backbone(x)[-1]
        torch.testing.assert_close(our_feat, ref_feat, rtol=1e-4, atol=1e-4)
        logits = ours(x, mode='tensor')
        torch.testing.assert_close(logits, ref(x), rtol=1e-4, atol=1e-4)
    assert our_feat.abs().mean() > 0.05  # not a degenerate (all-zero) comparison


def test_relu6_differs_from_relu(timm_pair):
    """The activation matters on these weights: the comparison above can tell ReLU from ReLU6."""
    ref, _ = timm_pair
    six = classifier(num_classes=10, act_cfg=dict(type='ReLU6')).eval()
    from mmkd_ext.models.backbones.mobilenet_v1 import convert_timm_mobilenet_v1
    six.load_state_dict(convert_timm_mobilenet_v1(ref.state_dict()), strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert not torch.allclose(six(x, mode='tensor'), ref(x), atol=1e-3)


def test_converter_rejects_unknown_keys(timm_pair):
    from mmkd_ext.models.backbones.mobilenet_v1 import convert_timm_mobilenet_v1
    ref, _ = timm_pair
    state = dict(ref.state_dict(), **{'conv_head.weight': torch.zeros(1)})
    with pytest.raises(KeyError, match='conv_head'):
        convert_timm_mobilenet_v1(state)
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith('blocks.4.')}
    with pytest.raises(KeyError, match='13'):
        convert_timm_mobilenet_v1(state)


def test_converter_script_on_a_written_checkpoint(timm_pair, tmp_path):
    """tools/model_converters/timm_mobilenet_v1_to_mmkd.py on a checkpoint written here (timm's
    training scripts save the weights under 'state_dict'); the result loads and computes as timm."""
    ref, _ = timm_pair
    src, dst = tmp_path / 'timm.pth', tmp_path / 'out' / 'mmkd.pth'
    torch.save({'state_dict': {'module.' + k: v for k, v in ref.state_dict().items()}}, src)
    script = osp.join(ROOT, 'tools', 'model_converters', 'timm_mobilenet_v1_to_mmkd.py')
    subprocess.run([sys.executable, script, str(src), str(dst)], check=True, capture_output=True)
    ours = classifier(num_classes=10).eval()
    ours.load_state_dict(torch.load(dst, weights_only=True)['state_dict'], strict=True)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(ours(x, mode='tensor'), ref(x), rtol=1e-4, atol=1e-4)
