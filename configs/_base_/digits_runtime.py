# mmpretrain's runtime, quieter and lighter for minute-long CPU runs.
_base_ = ['mmpretrain::_base_/default_runtime.py']
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=1),
    visualization=dict(type='VisualizationHook', enable=False),
)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
visualizer = dict(type='UniversalVisualizer', vis_backends=[dict(type='LocalVisBackend')])
