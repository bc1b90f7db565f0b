# OFA (exit branches on layer1-4 + the student's logits, eps 1, T 1: OFA's CIFAR-100 settings)
# from the ResNet-18-w32 teacher into the ResNet-18-w4 student that sees 150 labelled digits.
# A homogeneous pair (OFA is meant for heterogeneous ones; the demo has no CNN <-> ViT pair whose
# inputs match). Branch widths follow the dry run: max(32 student, 256 teacher) = 256 channels.
_base_ = ['./r18w32_kd_r18w4_1xb64-80e_digits-150.py']
model = dict(methods=[
    dict(
        type='OFALoss',
        eps=1.0,
        temperature=1.0,
        student_taps=dict(
            stages=['backbone.layer1', 'backbone.layer2', 'backbone.layer3', 'backbone.layer4']))
])
