"""Generative blocks: rebuild teacher features from masked student features (ViTKD, MGD); PAT's
feedback prompts, which adapt teacher features before its stages."""
from .adaptive_feedback_prompt import AdaptiveFeedbackPrompt
from .masked_generative_block import MaskedGenerativeBlock

__all__ = ['MaskedGenerativeBlock', 'AdaptiveFeedbackPrompt']
