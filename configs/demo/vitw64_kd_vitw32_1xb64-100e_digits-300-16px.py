# KD (Hinton, T 4) on the ViT pair: the logit reference for the feature methods beside it.
_base_ = ['./vitw64_vitkd_vitw32_1xb64-100e_digits-300-16px.py']
model = dict(methods=[dict(type='KDLoss', tau=4.0, loss_weight=1.0)])
