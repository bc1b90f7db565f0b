# Baseline hard KD (DeiT), DeiT-S -> DeiT-T. Published (ViTKD paper): 75.10.
# DeiT's hard distillation: 0.5 * CE(label) + 0.5 * CE(teacher's top-1), on the class token.
_base_ = ['./deit-s_vitkd_deit-t_4xb256-300e_in1k.py']
model = dict(student_loss_weight=0.5, methods=[dict(type='HardKDLoss', loss_weight=0.5)])
