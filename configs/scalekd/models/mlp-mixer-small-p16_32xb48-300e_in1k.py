# MLP-Mixer-S/16 (8 layers, width 512) with the reference's Mixer recipe as for Mixer-B/16
# (./mlp-mixer-base-p16_32xb48-300e_in1k.py), without drop path (the reference's Mixer-S model has
# none). The reference ran Mixer-S at 24 images per GPU with the lr set for 1536 images; here
# 32 x 48 = 1536, the batch that lr is for.
_base_ = ['./mlp-mixer-base-p16_32xb48-300e_in1k.py']
model = dict(
    backbone=dict(arch='s', drop_path_rate=0.0),
    head=dict(in_channels=512))  # the Mixer-S width (a classifier definition)
