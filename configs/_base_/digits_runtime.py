# mmpretrain's runtime, quieter and lighter for minute-long CPU runs.
_base_ = ['mmpretrain::_base_/default_runtime.py']
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    # Only the last epoch's checkpoint (interval -1, save_last): each save also formats the config.
    checkpoint=dict(type='CheckpointHook', interval=-1, save_last=True),
    visualization=dict(type='VisualizationHook', enable=False),
)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
visualizer = dict(type='UniversalVisualizer', vis_backends=[dict(type='LocalVisBackend')])
