# mmpretrain's DeiT3-Large (224 px) with mmkd_ext's DeiT3 backbone. mmpretrain 1.2.0's DeiT3 layer
# feeds its FFN the attention's LayerNorm (ln1) instead of ln2 (see ../README.md, "DeiT3
# teachers"). Same modules and state-dict keys: mmpretrain's published DeiT3 checkpoints load
# unchanged. Used as a teacher by ../deit3-*-in21k_*.py.
_base_ = ['mmpretrain::deit3/deit3-large-p16_64xb64_in1k.py']
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)
model = dict(backbone=dict(type='mmkd_ext.DeiT3'))
