# scikit-learn's bundled handwritten digits: 1,347 train / 450 test grey 8x8 images, 10 classes.
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

dataset_type = 'mmkd_ext.DigitsDataset'
data_preprocessor = dict(num_classes=10, mean=[78.0], std=[96.0], to_rgb=False)

train_pipeline = [
    dict(type='RandomResizedCrop', scale=8, crop_ratio_range=(0.7, 1.0)),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(type=dataset_type, split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=150,
    num_workers=0,
    dataset=dict(type=dataset_type, split='test', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
# Scoped: a config inheriting this one through 'mmkd_ext::' resolves its types in mmkd_ext's scope.
val_evaluator = dict(type='mmpretrain.Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
