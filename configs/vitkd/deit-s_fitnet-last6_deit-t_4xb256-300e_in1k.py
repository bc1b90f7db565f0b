# Baseline FitNet on the last 6 layers (blocks 6-10 and the final LayerNorm after block 11),
# DeiT-S -> DeiT-T. ViTKD paper ablation of FitNet.
_base_ = ['./deit-s_vitkd_deit-t_4xb256-300e_in1k.py']
taps = [f'backbone.layers.{i}' for i in range(6, 11)] + ['backbone.ln1']
model = dict(methods=[
    dict(
        type='FitNetLoss',
        student_taps=dict(feats=taps),
        teacher_taps=dict(feats=taps),
        reduction='sum',
        loss_weight=3e-5)
])
