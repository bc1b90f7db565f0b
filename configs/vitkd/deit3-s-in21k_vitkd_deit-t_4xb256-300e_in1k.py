# ViTKD, DeiT3-S (ImageNet-21K pre-trained, 82.76) -> DeiT-T. Published: 74.42 -> 76.06.
# The base of the ablations in ablations/.
_base_ = ['./deit-s_vitkd_deit-t_4xb256-300e_in1k.py']
model = dict(
    teacher='mmpretrain::deit3/deit3-small-p16_64xb64_in1k.py',
    teacher_checkpoint=('https://download.openmmlab.com/mmclassification/v0/deit3/'
                        'deit3-small-p16_in21k-pre_3rdparty_in1k_20221009-dcd90827.pth'),
)
