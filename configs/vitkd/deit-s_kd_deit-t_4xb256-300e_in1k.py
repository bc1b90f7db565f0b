# Baseline KD (soft), DeiT-S -> DeiT-T. Published (ViTKD paper, Table 3): 75.01.
# The authors' code (cls_KD, configs/distillers/imagenet/deit-s_distill_deit-t_img.py, KDLoss
# temp=1.0, alpha=0.5): 0.5 * CE(label) + 0.5 * T^2 * KD with T = 1, on the class-token logits.
# cls_KD writes the KD term as a cross-entropy to the teacher's distribution; ours is the KL, which
# differs by the teacher's entropy only (a constant: same gradients, a lower logged value).
_base_ = ['./deit-s_vitkd_deit-t_4xb256-300e_in1k.py']
model = dict(student_loss_weight=0.5, methods=[dict(type='KDLoss', tau=1.0, loss_weight=0.5)])
