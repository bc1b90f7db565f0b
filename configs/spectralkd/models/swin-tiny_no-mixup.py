# mmpretrain's Swin-T as the SpectralKD authors train it: Mixup and CutMix off, drop path 0
# (mmpretrain's Swin-T recipe uses 0.2).
_base_ = ['mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py']
model = dict(backbone=dict(drop_path_rate=0.0), train_cfg=None)
