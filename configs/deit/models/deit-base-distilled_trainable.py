# mmpretrain's DeiT-B with a distillation token (DistilledVisionTransformer + DeiT head), as DeiT
# trains it: mmkd_ext.TrainableDeiTClsHead (class head on the label; the distillation head is left
# to DeiTDistillationLoss) and drop path 0.1 (DeiT's default for every size).
_base_ = ['mmpretrain::deit/deit-base-distilled_16xb64_in1k.py']
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)
model = dict(backbone=dict(drop_path_rate=0.1), head=dict(type='mmkd_ext.TrainableDeiTClsHead'))
