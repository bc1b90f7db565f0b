"""Run the last stage(s) of a frozen teacher on given tokens, with autograd through frozen weights.

Some methods push student features through the teacher's own last layers and train on the result
(ScaleKD's teacher parameter perception): the gradient must flow back through the teacher's ops into
the student, while the teacher's weights stay frozen and receive nothing. :class:`TeacherTail` does
this for one teacher model:

* The teacher's distillation pass (the distiller's, under ``no_grad``) is not involved: the tail is
  run a second time, on other tokens, with ``torch.enable_grad()`` even when called under
  ``no_grad``.
* The teacher's parameters enter the computation detached (``torch.func.functional_call``), so they
  get no ``.grad`` whatever their ``requires_grad`` flag; nothing of the teacher is changed.
* The teacher must be in eval mode (the distiller keeps it there): a tail run in train mode would
  draw DropPath / Dropout masks.
* The object holds a reference to the teacher and is not an ``nn.Module``: a loss that keeps it is
  not given the teacher's parameters (no state dict, optimizer or export entry), and
  ``copy.deepcopy`` (EMA) shares the teacher instead of copying it.

Supported teachers (``teacher.backbone`` or the model itself), the "tail" and its input:

==========================================  ===================================================
backbone                                     tail (input: the tokens the tail-input module gives)
==========================================  ===================================================
mmpretrain ``SwinTransformer``               ``stages[-2].downsample`` (PatchMerging) on the
                                             stage-3 tokens, ``stages[-1]`` without its own
                                             downsample, ``norm{last}``; input
                                             ``stages.{n-2}`` = (tokens, (h, w)) before merging
mmpretrain ``SwinTransformerV2``             ``stages[-1]`` (merging first), ``norm{last}``;
                                             input ``stages.{n-2}``
mmpretrain ``VisionTransformer``,            the last ``tail_blocks`` of ``layers``, then ``ln1``
``DistilledVisionTransformer``, ``DeiT3``;   (when ``final_norm``); input
mmkd_ext ``DeiT3``                           ``layers.{L-1-tail_blocks}``
mmkd_ext ``CaiT``                            the last ``tail_blocks`` of ``layers`` (patch tokens
                                             only), then ``ln1``; input ``layers.{L-1-tail}``
==========================================  ===================================================

For ViT-style teachers with extra tokens (cls, distillation) the tail also needs the extra tokens
that lead its input: they are taken, detached, from the teacher's own output of the tail-input
module on the same images. The patch tokens in the tail blocks attend to them, so with the
teacher's own extra tokens the tail reproduces the teacher exactly when it is given the teacher's
own patch tokens: a perfect student projection then meets its target exactly (a learned stand-in
could not, since the real cls token depends on the image).
"""
import copy
from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch.func import functional_call

Grid = Tuple[int, int]


def _kinds():
    """{backbone class: kind} of the supported teachers (imported lazily: mmpretrain is heavy)."""
    from mmpretrain.models.backbones import (DeiT3, DistilledVisionTransformer, SwinTransformer,
                                             SwinTransformerV2, VisionTransformer)

    from mmkd_ext.models.backbones.cait import CaiT
    from mmkd_ext.models.backbones.deit3 import DeiT3 as FixedDeiT3
    return {
        SwinTransformer: 'swin',
        SwinTransformerV2: 'swin_v2',
        VisionTransformer: 'vit',
        DistilledVisionTransformer: 'vit',
        DeiT3: 'vit',
        FixedDeiT3: 'vit',
        CaiT: 'cait',
    }


SUPPORTED = ('mmpretrain SwinTransformer, SwinTransformerV2, VisionTransformer, '
             'DistilledVisionTransformer, DeiT3; mmkd_ext DeiT3, CaiT')


def frozen_call(module: nn.Module, *args, **kwargs):
    """``module(*args, **kwargs)`` with every parameter of ``module`` detached: gradient flows
    through the module's ops to its inputs, never into its weights."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return functional_call(module, params, args, kwargs)


class TeacherTail:
    """The frozen teacher's last stage(s), run with autograd on given tokens.

    Args:
        teacher (nn.Module): the teacher model (an mmpretrain classifier, whose ``backbone`` is one
            of the supported types, or the backbone itself). Only a reference is kept.
        tail_blocks (int, optional): ViT-style teachers: how many last blocks the tail runs, in
            ``[1, num_layers - 1]``. Required for them; must be None for Swin teachers (the tail
            is the whole last stage). Defaults to None.

    Attributes:
        kind (str): 'swin', 'swin_v2', 'vit' or 'cait'.
        in_dims (int): channels of the tokens the tail takes.
        out_dims (int): channels of the tokens it returns.
        num_extra (int): extra tokens (cls, distillation) that lead the tail's input sequence.
        final_extra (int): extra tokens that lead the output of :attr:`final_path` (CaiT's final
            norm also normalises its class token: 1; else :attr:`num_extra`).
        input_path (str): module path (in the teacher) whose output is the tail's input: the
            module to tap for the teacher's own tail input (its grid, its extra tokens).
        final_path (str): module path of the tail's last module (the final norm): the tap that
            gives the teacher's own final tokens.

    Call: ``tail(tokens, grid, extra=None)`` -> ``(tokens, grid)``:

    - tokens (Tensor): (B, h*w, in_dims) patch tokens, row-major on ``grid`` (no extra tokens).
    - grid (tuple[int]): (h, w) of ``tokens``; for Swin the stage-3 grid of the actual input.
    - extra (Tensor, optional): (B, num_extra, in_dims) extra tokens that lead the sequence
      (required when ``num_extra > 0``); detached here.
    - returns (B, h'*w', out_dims) patch tokens after the final norm (extra tokens dropped) and
      their (h', w') grid (Swin: the merged grid; ViT: ``grid``).
    """

    def __init__(self, teacher: nn.Module, tail_blocks: Optional[int] = None):
        self.teacher = teacher
        self.prefix = 'backbone.' if hasattr(teacher, 'backbone') else ''
        backbone = self.backbone
        kind = _kinds().get(type(backbone))
        if kind is None:
            raise TypeError(
                f'TeacherTail (ScaleKD teacher parameter perception) cannot run the last stage of '
                f'a {type(backbone).__module__}.{type(backbone).__name__} teacher backbone. '
                f'Supported: {SUPPORTED}.')
        self.kind = kind
        if kind in ('swin', 'swin_v2'):
            if tail_blocks is not None:
                raise ValueError(f'tail_blocks={tail_blocks} is for ViT-style teachers; a Swin '
                                 f'teacher runs its whole last stage: leave tail_blocks=None.')
            self._setup_swin(backbone)
        else:
            self._setup_vit(backbone, tail_blocks)
        self.tail_blocks = tail_blocks

    @property
    def backbone(self) -> nn.Module:
        # Looked up on every use: only the teacher itself is referenced, which the distiller's
        # deepcopy memo shares.
        return getattr(self.teacher, 'backbone', self.teacher)

    def _setup_swin(self, bb):
        n = len(bb.stages)
        if n < 2:
            raise ValueError(f'A Swin teacher with {n} stage has no last stage to run.')
        last = n - 1
        if not hasattr(bb, f'norm{last}'):
            raise ValueError(
                f'The Swin teacher has no final norm `norm{last}`: its out_indices '
                f'{tuple(bb.out_indices)} must include the last stage ({last}), whose normalised '
                f'output is the final feature ScaleKD mimics.')
        if self.kind == 'swin':
            merge = bb.stages[-2].downsample
            if merge is None:
                raise ValueError('The Swin teacher\'s stage before the last has no downsample.')
            self.in_dims, self.out_dims = merge.in_channels, merge.out_channels
            if getattr(bb, 'out_after_downsample', False):
                raise ValueError(
                    'A Swin teacher with out_after_downsample=True gives stage outputs after '
                    'patch merging, so `stages.{n-2}` is not the last stage\'s input before '
                    'merging; use the default out_after_downsample=False.')
        else:
            merge = bb.stages[-1].downsample
            if merge is None:
                raise ValueError('The SwinV2 teacher\'s last stage has no downsample.')
            self.in_dims, self.out_dims = merge.in_channels, merge.out_channels
        self.num_extra = self.final_extra = 0
        self.input_path = f'{self.prefix}stages.{n - 2}'
        self.final_path = f'{self.prefix}norm{last}'

    def _setup_vit(self, bb, tail_blocks):
        depth = len(bb.layers)
        if not isinstance(tail_blocks, int) or isinstance(
                tail_blocks, bool) or not (1 <= tail_blocks <= depth - 1):
            raise ValueError(
                f'A {type(bb).__name__} teacher needs tail_blocks, the number of its last blocks '
                f'the proxy path runs, an int in [1, {depth - 1}] (it has {depth} blocks); got '
                f'{tail_blocks!r}.')
        self.in_dims = self.out_dims = int(bb.embed_dims)
        self.num_extra = int(getattr(bb, 'num_extra_tokens', 0))
        self.final_extra = 1 if self.kind == 'cait' else self.num_extra
        self.input_path = f'{self.prefix}layers.{depth - 1 - tail_blocks}'
        has_norm = self.kind == 'cait' or getattr(bb, 'final_norm', False)
        self.final_path = (f'{self.prefix}ln1' if has_norm else f'{self.prefix}layers.{depth - 1}')

    def __deepcopy__(self, memo):
        # The teacher is frozen and shared (EMA copies of a loss must not hold a second teacher).
        new = copy.copy(self)
        memo[id(self)] = new
        return new

    def _check(self, tokens, grid, extra):
        if self.backbone.training:
            raise RuntimeError('TeacherTail: the teacher is in train mode (DropPath / Dropout '
                               'would run in the proxy path); call teacher.eval() (the distiller '
                               'keeps its teacher in eval mode).')
        if tokens.dim() != 3 or tokens.shape[-1] != self.in_dims:
            raise ValueError(f'TeacherTail ({self.kind}) takes patch tokens (B, N, '
                             f'{self.in_dims}), got shape {tuple(tokens.shape)}.')
        h, w = grid
        if tokens.shape[1] != h * w:
            raise ValueError(f'TeacherTail: {tokens.shape[1]} tokens do not fill the grid '
                             f'{h}x{w}.')
        if self.num_extra:
            if extra is None:
                raise ValueError(
                    f'TeacherTail: this {type(self.backbone).__name__} teacher has '
                    f'{self.num_extra} extra token(s) (cls, ...) leading its blocks\' input; '
                    f'pass them as `extra` (B, {self.num_extra}, {self.in_dims}), e.g. the '
                    f'teacher\'s own from its `{self.input_path}` output.')
            want = (tokens.shape[0], self.num_extra, self.in_dims)
            if tuple(extra.shape) != want:
                raise ValueError(f'TeacherTail: extra tokens of shape {tuple(extra.shape)}, '
                                 f'expected {want}.')

    def __call__(self,
                 tokens: torch.Tensor,
                 grid: Grid,
                 extra: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Grid]:
        grid = (int(grid[0]), int(grid[1]))
        self._check(tokens, grid, extra)
        bb = self.backbone
        with torch.enable_grad():
            if self.kind == 'swin':
                x, hw = frozen_call(bb.stages[-2].downsample, tokens, grid)
                x, hw = frozen_call(bb.stages[-1], x, hw, do_downsample=False)
                x = frozen_call(getattr(bb, f'norm{len(bb.stages) - 1}'), x)
                return x, tuple(int(v) for v in hw)
            if self.kind == 'swin_v2':
                x, hw = frozen_call(bb.stages[-1], tokens, grid)
                x = frozen_call(getattr(bb, f'norm{len(bb.stages) - 1}'), x)
                return x, tuple(int(v) for v in hw)
            x = tokens
            if self.num_extra:
                x = torch.cat([extra.detach().to(tokens.dtype), tokens], dim=1)
            for layer in bb.layers[len(bb.layers) - self.tail_blocks:]:
                x = frozen_call(layer, x)
            if self.kind == 'cait' or bb.final_norm:
                # (CaiT: its final norm acts token-wise, so the patch tokens need not wait for
                # the class-attention blocks, which never change them.)
                x = frozen_call(bb.ln1, x)
            return x[:, self.num_extra:], grid

    def __repr__(self) -> str:
        return (f'TeacherTail({self.kind}, {self.in_dims} -> {self.out_dims}, input '
                f'{self.input_path!r}, final {self.final_path!r})')
