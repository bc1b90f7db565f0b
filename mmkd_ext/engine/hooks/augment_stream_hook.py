"""Seed each training step from its place in the augmentation stream (see
:mod:`mmkd_ext.datasets.augment_stream`)."""
from mmengine.hooks import Hook

from mmkd_ext.datasets.augment_stream import batch_stream_key, step_seed
from mmkd_ext.registry import HOOKS
from mmkd_ext.utils.rng import seed_global_rngs


@HOOKS.register_module()
class AugmentStreamHook(Hook):
    """Seed the global generators from the batch's (seed, epoch, step, rank) before each training
    step (batch augments, DropPath, Dropout, random masks of the methods).

    Args:
        seed (int): the stream seed. Required.
    """
    priority = 'VERY_HIGH'

    def __init__(self, seed: int):
        self.seed = int(seed)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        samples = data_batch.get('data_samples') if isinstance(data_batch, dict) else None
        key = batch_stream_key(samples)
        if key is None:
            raise RuntimeError(
                'AugmentStreamHook: the training batch carries no stream key. The train '
                'dataloader must use mmkd_ext.AugmentStreamDataset and '
                'mmkd_ext.AugmentStreamSampler (set augment_stream=dict(seed=...) in the config '
                'and build the runner with mmkd_ext.apis.build_runner / tools/train.py).')
        seed_global_rngs(step_seed(self.seed, key.epoch, key.step, key.rank))
