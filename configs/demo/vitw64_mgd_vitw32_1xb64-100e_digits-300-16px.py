# MGD on the ViT pair: the last layer's patch tokens laid on the 4x4 patch grid (as the ViTKD
# paper's MGD baseline on DeiT), channel masks (MGD's classification code). alpha_mgd: a tenth of
# 7e-5 * (196 * 384) / (16 * 64) = 5.1e-3, the weight per element of a 196 x 384 DeiT-S map
# converted to 16 tokens x 64 channels (the tenth as for ViTKD).
_base_ = ['./vitw64_vitkd_vitw32_1xb64-100e_digits-300-16px.py']
model = dict(methods=[
    dict(
        type='MGDLoss',
        student_taps=dict(feat='backbone.ln1', grid='backbone.patch_embed'),
        teacher_taps=dict(feat='backbone.ln1'),
        alpha_mgd=5e-4,
        lambda_mgd=0.15,
        mask='channel')
])
