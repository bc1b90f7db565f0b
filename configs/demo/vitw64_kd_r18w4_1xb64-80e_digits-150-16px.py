# The logit part of the ScaleKD row alone: 0.5 CE + 0.5 KD (T 1) from the same ViT teacher into
# the same 16 px CNN student, so the table shows what ScaleKD's feature terms add to its KD term.
_base_ = ['./vitw64_scalekd_r18w4_1xb64-80e_digits-150-16px.py']
model = dict(methods=[dict(type='KDLoss', tau=1.0, loss_weight=0.5)])
