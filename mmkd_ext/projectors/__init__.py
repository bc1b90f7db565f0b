"""Projectors: student features to the teacher's channel count (built at set-up from tap shapes)."""
from .linear_projector import LinearProjector

__all__ = ['LinearProjector']
