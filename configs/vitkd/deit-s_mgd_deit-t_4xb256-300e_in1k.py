# Baseline MGD, DeiT-S -> DeiT-T. Published (ViTKD paper): 74.46.
# The last layer's patch tokens (after the final LayerNorm) are laid on the 14x14 patch grid and
# treated as a feature map; MGD's classification code and settings (cls_KD's mgd.py): whole
# channels zeroed per sample with probability 0.15 (mask='channel'), alpha 7e-5.
_base_ = ['./deit-s_vitkd_deit-t_4xb256-300e_in1k.py']
model = dict(methods=[
    dict(
        type='MGDLoss',
        student_taps=dict(feat='backbone.ln1', grid='backbone.patch_embed'),
        teacher_taps=dict(feat='backbone.ln1'),
        alpha_mgd=7e-5,
        lambda_mgd=0.15,
        mask='channel')
])
