from .augment_stream import (AugmentStreamDataset, AugmentStreamSampler, StreamKey,
                             apply_augment_stream, stream_description)
from .digits import DigitsDataset

__all__ = [
    'AugmentStreamDataset', 'AugmentStreamSampler', 'DigitsDataset', 'StreamKey',
    'apply_augment_stream', 'stream_description'
]
