# SpectralKD: CaiT-S24 -> DeiT-S on ImageNet-1K. Published top-1: DeiT-S 79.8 -> 82.2.
# Same layers and weights as the DeiT-T config (equal widths here: no channel pooling), 500 epochs.
_base_ = ['./cait-s24_spectralkd_deit-tiny_2xb256-400e_in1k.py']

model = dict(student='{{ fileDirname }}/models/deit-small_no-mixup.py')
train_cfg = dict(max_epochs=500)
