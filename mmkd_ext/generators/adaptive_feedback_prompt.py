"""Adaptive Feedback Prompts (PAT): prompt blocks put before teacher stages by forward pre-hooks,
adapting the teacher's features with the student's feedback of the previous iteration."""
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmkd_ext.registry import MODELS
from mmkd_ext.utils.tokens import map_to_tokens, tokens_to_map

Grid = Tuple[int, int]


class SqueezeExcitation(nn.Module):
    """``x * sigmoid(W_2 relu(W_1 avgpool(x)))``: channel gates applied to the input (the
    reference code's block returns the gates alone, which replaces the features by them).

    Args:
        channels (int): C.
        ratio (int): reduction of the hidden width, ``max(C // ratio, 1)``. Defaults to 16.
    """

    def __init__(self, channels: int, ratio: int = 16):
        super().__init__()
        hidden = max(channels // ratio, 1)
        self.compress = nn.Conv2d(channels, hidden, 1)
        self.excite = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.excite(F.relu(self.compress(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


@MODELS.register_module()
class AdaptiveFeedbackPrompt(nn.Module):
    """The prompt block that PAT puts before one teacher stage; works on maps (B, C, H, W).

    ``out = x + gate * prompt(fusion(concat(x, align(feedback))))`` with

    - ``align``: the feedback (the previous iteration's aligned student minus prompted teacher at
      the stage OUTPUT, ``(B', C_fb, H_fb, W_fb)``) nearest-resized to the stage input's
      ``(H, W)`` and, when ``C_fb != C``, a Conv1x1 (no bias) to ``C``; samples are taken in order,
      cycling when the previous batch was smaller;
    - ``fusion``: Conv1x1(2C -> C) -> Conv5x5 -> Conv1x1 -> squeeze-excitation -> Conv1x1;
    - ``prompt``: grouped Conv1x1 (``groups``) -> depthwise Conv5x5 -> Conv1x1 ->
      squeeze-excitation -> grouped Conv1x1;
    - ``gate``: a learnable scalar, ``gate_init`` (0: the prompted teacher starts as the teacher).

    Without feedback (the first iteration) the block returns ``x`` unchanged: the prompt is
    skipped. The feedback (empty until the first one) is the module's extra state
    (``<prefix>._extra_state`` in its state dict), so it is saved in checkpoints and a resumed run
    continues with it, whatever the batch size it came from. It is not a buffer: its shape follows
    the batch, and MMEngine's EMA copies buffers in place, shape for shape.

    Args:
        channels (int): C, the channels of the stage input.
        feedback_channels (int, optional): C_fb, the channels of the stage output. Defaults to
            None (= C).
        groups (int): groups of the prompt's grouped convolutions; must divide C. Defaults to 4.
        kernel_size (int): of the fusion and depthwise convolutions. Defaults to 5.
        se_ratio (int): squeeze-excitation reduction. Defaults to 16.
        gate_init (float): initial gate. Defaults to 0.0.
    """

    def __init__(self,
                 channels: int,
                 feedback_channels: Optional[int] = None,
                 groups: int = 4,
                 kernel_size: int = 5,
                 se_ratio: int = 16,
                 gate_init: float = 0.0):
        super().__init__()
        if channels % groups:
            raise ValueError(f'AdaptiveFeedbackPrompt: groups ({groups}) must divide the stage '
                             f'input channels ({channels}); set prompt=dict(groups=...) in the '
                             f'loss config.')
        self.channels = channels
        self.feedback_channels = feedback_channels or channels
        c, k, pad = channels, kernel_size, kernel_size // 2
        self.feedback_align = (
            nn.Conv2d(self.feedback_channels, c, 1, bias=False)
            if self.feedback_channels != c else nn.Identity())
        self.fusion = nn.Sequential(
            nn.Conv2d(2 * c, c, 1), nn.Conv2d(c, c, k, padding=pad), nn.Conv2d(c, c, 1),
            SqueezeExcitation(c, se_ratio), nn.Conv2d(c, c, 1))
        self.prompt = nn.Sequential(
            nn.Conv2d(c, c, 1, groups=groups), nn.Conv2d(c, c, k, padding=pad, groups=c),
            nn.Conv2d(c, c, 1), SqueezeExcitation(c, se_ratio), nn.Conv2d(c, c, 1, groups=groups))
        self.gate = nn.Parameter(torch.tensor(float(gate_init)))
        self.feedback = torch.zeros(0)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def has_feedback(self) -> bool:
        return self.feedback.numel() > 0

    def set_feedback(self, feedback: torch.Tensor) -> None:
        """Keep ``feedback`` (B, C_fb, H_fb, W_fb), detached, for the next iteration."""
        if feedback.dim() != 4 or feedback.shape[1] != self.feedback_channels:
            raise ValueError(f'AdaptiveFeedbackPrompt: feedback must be (B, '
                             f'{self.feedback_channels}, H, W), got {tuple(feedback.shape)}.')
        self.feedback = feedback.detach().clone()

    def clear_feedback(self) -> None:
        self.feedback = torch.zeros(0)

    def get_extra_state(self) -> torch.Tensor:
        return self.feedback

    def set_extra_state(self, state) -> None:
        if not torch.is_tensor(state):
            raise TypeError(f'AdaptiveFeedbackPrompt: a checkpoint gave feedback of type '
                            f'{type(state).__name__}, expected a tensor.')
        self.feedback = state.detach().clone()

    def align_feedback(self, feedback: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B', C_fb, H_fb, W_fb) -> (B, C, H, W) like ``x``."""
        b = x.shape[0]
        if feedback.shape[0] != b:
            feedback = feedback[torch.arange(b) % feedback.shape[0]]
        feedback = feedback.to(device=x.device, dtype=x.dtype)
        if tuple(feedback.shape[-2:]) != tuple(x.shape[-2:]):
            feedback = F.interpolate(feedback, size=tuple(x.shape[-2:]), mode='nearest')
        return self.feedback_align(feedback)

    def forward(self, x: torch.Tensor, feedback: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, C, H, W), feedback (B', C_fb, H_fb, W_fb) or None -> (B, C, H, W)."""
        if feedback is None:
            return x
        fused = self.fusion(torch.cat([x, self.align_feedback(feedback, x)], dim=1))
        return x + self.gate.to(x.dtype) * self.prompt(fused)


def _grid_arg(args) -> Optional[Grid]:
    """The (h, w) a module was called with beside its tokens (Swin blocks: ``block(x, hw)``)."""
    for a in args[1:]:
        if isinstance(a, (tuple, list, torch.Size)) and len(a) == 2 and all(
                isinstance(v, int) for v in a):
            return int(a[0]), int(a[1])
    return None


def split_tokens(x: torch.Tensor, grid: Grid, num_extra: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Tokens (B, E + h*w, C), the E extra (cls, distillation) tokens FIRST as in mmpretrain ->
    (extra (B, E, C), patch map (B, C, h, w)). ``num_extra`` is used when the count matches the
    grid; a sequence of exactly h*w tokens has none (Swin, or a ViT without cls token)."""
    n = grid[0] * grid[1]
    extra = x.shape[1] - n
    if extra not in (0, num_extra):
        raise ValueError(f'A teacher stage gave {x.shape[1]} tokens, which is neither the '
                         f'{n} patches of its {grid[0]}x{grid[1]} grid nor them plus '
                         f'{num_extra} extra token(s).')
    return x[:, :extra], tokens_to_map(x[:, extra:], grid)


def merge_tokens(extra: torch.Tensor, fmap: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`split_tokens`: (B, E, C) + (B, C, h, w) -> (B, E + h*w, C)."""
    tokens = map_to_tokens(fmap)
    return torch.cat([extra, tokens], dim=1) if extra.shape[1] else tokens.contiguous()


def stage_map(value, grid: Optional[Grid], num_extra: int) -> torch.Tensor:
    """A stage's output as a map: a map as it is; tokens without their extra tokens, on ``grid``."""
    if isinstance(value, (tuple, list)):
        value = value[0]
    if value.dim() == 4:
        return value
    if grid is None:
        raise ValueError(f'Teacher stage tokens of shape {tuple(value.shape)} need their patch '
                         f"grid: set the loss's teacher tap `grid` (e.g. 'backbone.patch_embed').")
    return split_tokens(value, grid, num_extra)[1]


class PromptedPass:
    """Attach prompt blocks before teacher stages for one pass, and record the stage outputs.

    A context manager: on entry it registers, on the module where each stage starts (its prompt
    site), a forward PRE-hook that replaces that module's input ``x`` by ``block(x,
    block.feedback)`` (maps directly; tokens laid on their grid without the extra tokens, which lead
    the sequence and pass unchanged, and put back in the same order), and on the module that ends
    the stage a forward hook that records its output and grid; on exit all are removed. So the
    prompts act only inside the ``with`` block: the teacher carries no hook outside it, and a pass
    outside it (the distiller's clean pass) is the teacher itself.

    Args:
        modules (Sequence[nn.Module]): the modules whose outputs are the stages, in order.
        blocks (Sequence[AdaptiveFeedbackPrompt | None]): the block before each stage (None: no
            prompt there).
        grid (tuple, optional): the (h, w) patch grid of token stages called without one (ViT
            blocks); Swin blocks give theirs in their call. Defaults to None.
        num_extra (int): extra tokens leading the teacher's sequences. Defaults to 0.
        extra_modules (dict, optional): {name: module} whose outputs are recorded too (the
            logits). Defaults to None.
        prompt_modules (Sequence[nn.Module], optional): where each stage starts, i.e. the module
            whose input the block replaces (ViT blocks 1, 3, 9, 11 as stages start at blocks 0, 2,
            4, 10). Defaults to None: ``modules`` (stage = one module).

    Yields:
        dict: ``{'stages': [outputs], 'grids': [(h, w) or None], 'inputs': [inputs of the
        prompt sites as given, before the prompt], name: output}``, filled by the pass.
    """

    def __init__(self,
                 modules: Sequence[nn.Module],
                 blocks: Sequence[Optional[AdaptiveFeedbackPrompt]],
                 grid: Optional[Grid] = None,
                 num_extra: int = 0,
                 extra_modules: Optional[Dict[str, nn.Module]] = None,
                 prompt_modules: Optional[Sequence[nn.Module]] = None):
        prompt_modules = list(modules if prompt_modules is None else prompt_modules)
        if not len(modules) == len(blocks) == len(prompt_modules):
            raise ValueError(f'PromptedPass: {len(modules)} stage modules, {len(prompt_modules)} '
                             f'prompt sites and {len(blocks)} blocks.')
        self.modules, self.blocks = list(modules), list(blocks)
        self.prompt_modules = prompt_modules
        self.grid = tuple(grid) if grid is not None else None
        self.num_extra = num_extra
        self.extra_modules = dict(extra_modules or {})

    def _grid(self, args, x) -> Grid:
        grid = _grid_arg(args) or self.grid
        if grid is None:
            raise ValueError(f'A token teacher stage (input {tuple(x.shape)}) needs its patch '
                             f"grid: set the loss's teacher tap `grid` (e.g. "
                             f"'backbone.patch_embed').")
        return grid

    def _pre_hook(self, i: int, store: dict):

        def hook(module, args):
            x = args[0]
            if store['inputs'][i] is not None:
                return None  # a module called twice in one pass is prompted once, the first time
            store['inputs'][i] = x
            block = self.blocks[i]
            if block is None or not block.has_feedback:
                return None  # no prompt here, or no feedback yet: the stage runs as it is
            if x.dim() == 4:
                x = block(x, block.feedback)
            elif x.dim() == 3:
                extra, fmap = split_tokens(x, self._grid(args, x), self.num_extra)
                x = merge_tokens(extra, block(fmap, block.feedback))
            else:
                raise ValueError(f'A prompted teacher stage takes {tuple(x.shape)}: expected a '
                                 f'map (B, C, H, W) or tokens (B, L, C).')
            return (x, *args[1:])

        return hook

    def _post_hook(self, i: int, store: dict):

        def hook(module, args, output):
            if store['stages'][i] is None:
                store['stages'][i] = output
                x = output[0] if isinstance(output, (tuple, list)) else output
                store['grids'][i] = None if x.dim() == 4 else (
                    _grid_arg(args) or self._grid_of_output(output) or self.grid)

        return hook

    @staticmethod
    def _grid_of_output(output) -> Optional[Grid]:
        return _grid_arg(output) if isinstance(output, (tuple, list)) else None

    def _record(self, name: str, store: dict):

        def hook(module, args, output):
            store.setdefault(name, output)

        return hook

    @contextmanager
    def __call__(self):
        n = len(self.modules)
        store = dict(stages=[None] * n, grids=[None] * n, inputs=[None] * n)
        handles = []
        try:
            for i, (site, m) in enumerate(zip(self.prompt_modules, self.modules)):
                handles.append(site.register_forward_pre_hook(self._pre_hook(i, store)))
                handles.append(m.register_forward_hook(self._post_hook(i, store)))
            for name, m in self.extra_modules.items():
                handles.append(m.register_forward_hook(self._record(name, store)))
            yield store
        finally:
            for h in handles:
                h.remove()

    @staticmethod
    def stage_maps(store: dict, num_extra: int) -> List[torch.Tensor]:
        """The recorded stage outputs as maps (B, C, H, W)."""
        return [stage_map(v, g, num_extra) for v, g in zip(store['stages'], store['grids'])]
