# NKD with the settings for CNN students (gamma 1.5, T 1).
_base_ = ['./r18w32_kd_r18w4_1xb64-80e_digits-150.py']
model = dict(methods=[dict(type='NKDLoss', gamma=1.5, tau=1.0)])
