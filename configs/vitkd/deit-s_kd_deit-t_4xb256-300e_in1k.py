# Baseline KD (soft), DeiT-S -> DeiT-T. Published (ViTKD paper, Table 3): 75.01.
# The ViTKD paper does not give its KD settings; these are DeiT's soft distillation
# (T = 3, 0.9 * CE + 0.1 * T^2 KL) on the class-token logits.
_base_ = ['./deit-s_vitkd_deit-t_4xb256-300e_in1k.py']
model = dict(
    student_loss_weight=0.9,
    methods=[dict(type='KDLoss', tau=3.0, loss_weight=0.1)])
