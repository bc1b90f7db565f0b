"""Logits and class targets as distillation losses need them."""
from typing import Optional, Sequence, Tuple

import torch


def as_logits(value) -> torch.Tensor:
    """Logits (B, C) from a tapped head output: a tensor, or the first element of a tuple
    (heads with several outputs, e.g. DeiT's class and distillation logits, put the class one
    first).
    """
    if isinstance(value, (list, tuple)):
        value = value[0]
    if not torch.is_tensor(value) or value.dim() != 2:
        raise ValueError(f'Expected logits of shape (B, C) from the tapped head, got '
                         f'{getattr(value, "shape", type(value))}. Tap the module that outputs '
                         f'class scores (for mmpretrain classifiers: "head").')
    return value


def class_targets(data_samples: Optional[Sequence],
                  num_classes: int,
                  device=None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Hard labels (B,) and, when the batch was mixed (Mixup/CutMix), soft labels (B, C).

    mmpretrain's data preprocessor stores a mixed label as ``gt_score`` and keeps the original
    ``gt_label``; with a soft label the hard label returned is its argmax (the dominant class).
    """
    if not data_samples:
        raise ValueError('This loss needs the labels: data_samples with gt_label / gt_score.')
    soft = None
    if all('gt_score' in ds for ds in data_samples):
        soft = torch.stack([ds.gt_score for ds in data_samples]).float()
        if soft.shape[1] != num_classes:
            raise ValueError(f'Soft labels have {soft.shape[1]} classes, logits {num_classes}.')
        hard = soft.argmax(dim=1)
    else:
        hard = torch.cat([ds.gt_label.reshape(-1)[:1] for ds in data_samples])
    if device is not None:
        hard = hard.to(device)
        soft = soft.to(device) if soft is not None else None
    return hard.long(), soft


def drop_target_column(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, C) logits -> (B, C-1): each row without its target column ``target`` (B,)."""
    keep = torch.ones_like(logits, dtype=torch.bool)
    keep.scatter_(1, target.view(-1, 1), False)
    return logits[keep].view(logits.size(0), logits.size(1) - 1)
