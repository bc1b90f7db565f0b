# mmpretrain's DeiT-S as the SpectralKD authors train it: Mixup and CutMix off, drop path 0.
_base_ = ['mmpretrain::deit/deit-small_4xb256_in1k.py']
model = dict(backbone=dict(drop_path_rate=0.0), train_cfg=None)
