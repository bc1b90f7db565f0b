# ScaleKD, "advanced" recipe as the reference code ran it (published 78.64 -> 82.03): Swin-L
# (86.24) -> ResNet-50-D (mmpretrain's ResNetV1d) trained with a sigmoid BCE loss on one-hot labels
# (models/resnet50-d-bce_32xb64-lamb-300e_in1k.py); otherwise as
# swin-l_scalekd_resnet50_32xb64-300e_in1k.py. The KD term is softmax KL on the logits (T 1), as in
# the reference; only the student's own task loss is BCE.
_base_ = ['./swin-l_scalekd_resnet50_32xb64-300e_in1k.py']
model = dict(student='{{ fileDirname }}/models/resnet50-d-bce_32xb64-lamb-300e_in1k.py')
