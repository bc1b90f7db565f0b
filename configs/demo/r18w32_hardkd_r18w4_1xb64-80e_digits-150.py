# DeiT-style hard distillation: CE against the teacher's top-1, beside the student's own CE.
_base_ = ['./r18w32_kd_r18w4_1xb64-80e_digits-150.py']
model = dict(methods=[dict(type='HardKDLoss', loss_weight=1.0)])
