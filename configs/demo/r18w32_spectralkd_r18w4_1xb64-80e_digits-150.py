# SpectralKD on the digits: the KD row's loss plus the spectral alignment of the first three stage
# maps (8x8, 4x4, 2x2 on both; the w32 teacher's channels average-pooled to the w4 student's).
_base_ = ['./r18w32_kd_r18w4_1xb64-80e_digits-150.py']
model = dict(methods=[
    dict(type='KDLoss', tau=4.0, loss_weight=1.0),
    dict(
        type='SpectralKDLoss',
        loss_weight=1.0,
        student_taps=dict(feats=['backbone.layer1', 'backbone.layer2', 'backbone.layer3']),
        teacher_taps=dict(feats=['backbone.layer1', 'backbone.layer2', 'backbone.layer3'])),
])
