# FitNet on the last layer (final LayerNorm, patch tokens) of the ViT pair: the baseline that
# ViTKD reports hurts a ViT student. Weight: ViTKD's per-element mimicking weight 3e-5 as a mean for
# 196 tokens x 384 channels (3e-5 * 196 * 384 = 2.26), a tenth of it as for ViTKD.
_base_ = ['./vitw64_vitkd_vitw32_1xb64-100e_digits-300-16px.py']
model = dict(methods=[
    dict(
        type='FitNetLoss',
        student_taps=dict(feats='backbone.ln1'),
        teacher_taps=dict(feats='backbone.ln1'),
        reduction='mean',
        loss_weight=0.226)
])
