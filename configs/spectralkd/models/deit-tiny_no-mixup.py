# mmpretrain's DeiT-T as the SpectralKD authors train it: Mixup and CutMix off (effectively off in
# their runs), drop path 0 (mmpretrain's default for DeiT-T already).
_base_ = ['mmpretrain::deit/deit-tiny_4xb256_in1k.py']
model = dict(backbone=dict(drop_path_rate=0.0), train_cfg=None)
