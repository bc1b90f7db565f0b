"""A linear map over the channel dimension, for tokens and for maps."""
import torch
import torch.nn as nn

from mmkd_ext.registry import MODELS


@MODELS.register_module()
class LinearProjector(nn.Module):
    """``Linear(in_dims -> out_dims)`` over channels: the last dim of tokens (B, N, C_in) ->
    (B, N, C_out), dim 1 of maps (B, C_in, h, w) -> (B, C_out, h, w) (a 1x1 convolution).

    Losses build it at set-up with the channel counts of their taps; a config only writes
    ``projector=dict(type='LinearProjector')`` (plus options).

    Args:
        in_dims: student channels.
        out_dims: teacher channels.
        bias: learn a bias.
        identity_if_equal: no parameters and the identity when ``in_dims == out_dims`` (ViTKD's
            reference code has no projector when the widths match).
    """

    def __init__(self,
                 in_dims: int,
                 out_dims: int,
                 bias: bool = True,
                 identity_if_equal: bool = True):
        super().__init__()
        self.in_dims, self.out_dims = in_dims, out_dims
        self.fc = (None if identity_if_equal and in_dims == out_dims else nn.Linear(
            in_dims, out_dims, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1 if x.dim() == 3 else 1] != self.in_dims:
            raise ValueError(f'LinearProjector expects {self.in_dims} channels, got input of '
                             f'shape {tuple(x.shape)}.')
        if self.fc is None:
            return x
        if x.dim() == 4:
            return self.fc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.fc(x)

    def extra_repr(self) -> str:
        return f'{self.in_dims} -> {self.out_dims}' + (' (identity)' if self.fc is None else '')
