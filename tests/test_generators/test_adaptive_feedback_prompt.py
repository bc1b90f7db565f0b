"""AdaptiveFeedbackPrompt and PromptedPass: the block against its formula, a squeeze-excitation
that gates its input, the feedback alignment and state, tokens on real mmpretrain Swin / ViT
blocks, and hooks that live only inside the prompted pass."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mmkd_ext  # noqa: F401
from mmkd_ext.generators import AdaptiveFeedbackPrompt
from mmkd_ext.generators.adaptive_feedback_prompt import PromptedPass, SqueezeExcitation
from mmkd_ext.utils.tokens import map_to_tokens, tokens_to_map


def test_squeeze_excitation_gates_its_input():
    torch.manual_seed(0)
    se = SqueezeExcitation(8, ratio=2)
    x = torch.randn(2, 8, 4, 4)
    gate = torch.sigmoid(
        F.conv2d(
            F.relu(F.conv2d(x.mean((2, 3), keepdim=True), se.compress.weight, se.compress.bias)),
            se.excite.weight, se.excite.bias))
    assert torch.allclose(se(x), x * gate)
    # The reference code's block returns the gate alone: for a zero input that is sigmoid(.) > 0.
    assert torch.equal(se(torch.zeros(2, 8, 4, 4)), torch.zeros(2, 8, 4, 4))


def test_block_against_its_formula_and_the_gate():
    torch.manual_seed(0)
    block = AdaptiveFeedbackPrompt(8, feedback_channels=12, se_ratio=2, gate_init=0.0)
    x, fb = torch.randn(3, 8, 6, 6), torch.randn(2, 12, 3, 3)
    assert block(x) is x  # no feedback: the prompt is skipped
    assert torch.equal(block(x, fb), x)  # gate 0: exactly the input
    with torch.no_grad():
        block.gate.fill_(0.7)
    # Feedback: samples 0, 1, 0 (cycling), each pixel repeated 2 x 2, 1x1 conv 12 -> 8 (no bias).
    aligned = fb[[0, 1, 0]].repeat_interleave(2, 2).repeat_interleave(2, 3)
    aligned = torch.einsum('bchw,oc->bohw', aligned, block.feedback_align.weight[:, :, 0, 0])
    fused = block.fusion(torch.cat([x, aligned], 1))
    want = x + 0.7 * block.prompt(fused)
    assert torch.allclose(block(x, fb), want, atol=1e-6)
    # The stacks are as the spec: fusion 2C -> C, 5x5, 1x1, SE, 1x1; prompt grouped (4) 1x1,
    # depthwise 5x5, 1x1, SE, grouped 1x1.
    f, p = block.fusion, block.prompt
    assert (f[0].in_channels, f[0].out_channels, f[1].kernel_size) == (16, 8, (5, 5))
    assert isinstance(f[3], SqueezeExcitation) and isinstance(p[3], SqueezeExcitation)
    groups = (p[0].groups, p[1].groups, p[1].kernel_size, p[2].groups, p[4].groups)
    assert groups == (4, 8, (5, 5), 1, 4)
    assert isinstance(AdaptiveFeedbackPrompt(8).feedback_align, nn.Identity)


def test_feedback_is_extra_state_of_any_batch_size():
    torch.manual_seed(0)
    block = AdaptiveFeedbackPrompt(8, se_ratio=2)
    assert not block.has_feedback
    fb = torch.randn(5, 8, 3, 3, requires_grad=True)
    block.set_feedback(fb * 2)
    assert block.has_feedback and not block.feedback.requires_grad
    state = block.state_dict()
    assert torch.equal(state['_extra_state'], fb.detach() * 2)
    other = AdaptiveFeedbackPrompt(8, se_ratio=2)
    other.set_feedback(torch.zeros(2, 8, 1, 1))
    other.load_state_dict(state)
    assert torch.equal(other.feedback, fb.detach() * 2)
    assert 'feedback' not in dict(block.named_buffers())  # EMA copies buffers shape for shape
    with pytest.raises(ValueError, match=r'feedback must be \(B, 8, H, W\)'):
        block.set_feedback(torch.zeros(2, 4, 3, 3))
    with pytest.raises(ValueError, match='groups'):
        AdaptiveFeedbackPrompt(6)


def swin_block(dims=8):
    from mmpretrain.models.backbones.swin_transformer import SwinBlock
    return SwinBlock(embed_dims=dims, num_heads=2, window_size=2, ffn_ratio=2.).eval()


def vit_block(dims=8):
    from mmpretrain.models.backbones.vision_transformer import TransformerEncoderLayer
    return TransformerEncoderLayer(embed_dims=dims, num_heads=2, feedforward_channels=16).eval()


def test_swin_tokens_use_the_grid_of_the_call_and_go_back_in_order():
    torch.manual_seed(0)
    block, afp = swin_block(), AdaptiveFeedbackPrompt(8, se_ratio=2, gate_init=0.5)
    hw = (4, 2)  # not square: a sqrt(L) grid would be wrong
    x = torch.randn(2, 8, 8)
    afp.set_feedback(torch.randn(2, 8, 4, 2))
    with torch.no_grad():
        clean = block(x, hw)
    passes = PromptedPass([block], [afp])
    with torch.no_grad(), passes() as store:
        out = block(x, hw)
    with torch.no_grad():
        prompted = map_to_tokens(afp(tokens_to_map(x, hw), afp.feedback))
        assert torch.equal(out, block(prompted, hw))
    assert store['grids'] == [hw] and store['stages'][0] is out
    assert torch.equal(store['inputs'][0], x)
    # Outside the pass the block is itself again: no hook is left on it.
    assert not block._forward_pre_hooks and not block._forward_hooks
    assert not torch.equal(out, clean)
    with torch.no_grad():
        assert torch.equal(block(x, hw), clean)


def test_vit_tokens_keep_the_class_token_first():
    torch.manual_seed(0)
    block, afp = vit_block(), AdaptiveFeedbackPrompt(8, se_ratio=2, gate_init=0.5)
    grid = (2, 3)
    x = torch.randn(2, 1 + 6, 8)
    afp.set_feedback(torch.randn(2, 8, 2, 3))
    seen = {}
    block.ln1.register_forward_pre_hook(lambda m, a: seen.update(x=a[0]))
    with torch.no_grad(), PromptedPass([block], [afp], grid=grid, num_extra=1)():
        block(x)
    used = seen['x']
    assert torch.equal(used[:, 0], x[:, 0])  # the class token, first, is not prompted
    with torch.no_grad():
        want = map_to_tokens(afp(tokens_to_map(x[:, 1:], grid), afp.feedback))
    assert torch.equal(used[:, 1:], want)
    assert not torch.equal(used[:, -1], x[:, -1])  # the last token is a patch: prompted
    # At gate 0 the round trip tokens -> map -> tokens is exact.
    with torch.no_grad():
        afp.gate.zero_()
        with PromptedPass([block], [afp], grid=grid, num_extra=1)():
            block(x)
    assert torch.equal(seen['x'], x)
    with pytest.raises(ValueError, match='neither'):
        with torch.no_grad(), PromptedPass([block], [afp], grid=(2, 2), num_extra=1)():
            block(x)
