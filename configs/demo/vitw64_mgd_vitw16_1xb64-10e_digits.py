# MGD on the ViT pair: the last layer's patch tokens laid on the 2x2 patch grid (as the ViTKD
# paper's MGD baseline on DeiT), not the ResNet pair: its last stage is 1x1 on 8x8 digits, where a
# spatial mask means nothing. alpha_mgd scaled like the other rows: 7e-5 * (196 * 384) / (4 * 64).
_base_ = ['./vitw64_vitkd_vitw16_1xb64-10e_digits.py']
model = dict(methods=[
    dict(type='MGDLoss', student_taps=dict(feat='backbone.ln1', grid='backbone.patch_embed'),
         teacher_taps=dict(feat='backbone.ln1'), alpha_mgd=2e-2, lambda_mgd=0.15)
])
