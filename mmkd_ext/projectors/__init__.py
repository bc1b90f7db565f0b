"""Projectors: student features to the teacher's channel count (built at set-up from tap shapes)."""
from .cross_attention_projector import CrossAttentionProjector
from .linear_projector import LinearProjector
from .ofa_exit_branch import OFAExitBranch
from .region_aware_attention import RegionAwareAttention

__all__ = ['LinearProjector', 'CrossAttentionProjector', 'RegionAwareAttention', 'OFAExitBranch']
