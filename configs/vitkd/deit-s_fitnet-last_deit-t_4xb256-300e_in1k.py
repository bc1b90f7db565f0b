# Baseline FitNet on the last layer (after the final LayerNorm, patch tokens), DeiT-S -> DeiT-T.
# Published (ViTKD paper): 73.36 (below the 74.42 baseline: mimicking a deep layer hurts).
# Weight: ViTKD's mimicking weight and reduction (3e-5, sum over tokens and channels / batch).
_base_ = ['./deit-s_vitkd_deit-t_4xb256-300e_in1k.py']
model = dict(methods=[
    dict(
        type='FitNetLoss',
        student_taps=dict(feats='backbone.ln1'),
        teacher_taps=dict(feats='backbone.ln1'),
        reduction='sum',
        loss_weight=3e-5)
])
