"""A DeiT head with a distillation token that can be trained (mmpretrain's can only evaluate)."""
from typing import List, Tuple

import torch
from mmpretrain.models.heads import DeiTClsHead
from mmpretrain.structures import DataSample

from mmkd_ext.registry import MODELS


@MODELS.register_module()
class TrainableDeiTClsHead(DeiTClsHead):
    """mmpretrain's :class:`DeiTClsHead` (class head ``layers.head`` on the class token,
    distillation head ``layers.head_dist`` on the distillation token), trainable as DeiT trains it.

    mmpretrain's head warns that it cannot be trained: its ``loss`` applies the label to the
    average of the two heads. DeiT (Touvron et al., 2021) instead trains the class head on the true
    label and the distillation head on the teacher's prediction:

    - ``loss``: the head's loss (e.g. label smoothing; the mixed label under Mixup/CutMix) on the
      class-token logits only. The distillation head is run too, so that a distillation loss tapping
      ``head.layers.head_dist`` (:class:`mmkd_ext.losses.DeiTDistillationLoss`) reads its logits;
      the label never reaches it.
    - ``forward`` / ``predict`` (evaluation): the average of the two heads' logits, DeiT's
      inference, as mmpretrain's head.

    Args: those of :class:`DeiTClsHead` (``num_classes``, ``in_channels``, ``hidden_dim``,
    ``act_cfg``, ``loss``, ``init_cfg``).

    Shapes: ``feats[-1]`` is the backbone's ``(cls_token, dist_token)``, each (B, D)
    (``DistilledVisionTransformer`` with ``out_type='cls_token'``); logits are (B, num_classes).
    """

    def forward(self, feats: Tuple[List[torch.Tensor]]) -> torch.Tensor:
        """(B, num_classes): the mean of the class and distillation heads' logits."""
        cls_token, dist_token = self.pre_logits(feats)
        return (self.layers.head(cls_token) + self.layers.head_dist(dist_token)) / 2

    def loss(self, feats: Tuple[List[torch.Tensor]], data_samples: List[DataSample],
             **kwargs) -> dict:
        """The task loss of the class head alone: ``{'loss': loss(class logits, label)}``."""
        cls_token, dist_token = self.pre_logits(feats)
        cls_score = self.layers.head(cls_token)
        # Run for the distillation loss's tap (its output is read there, not used here).
        self.layers.head_dist(dist_token)
        return self._get_loss(cls_score, data_samples, **kwargs)
