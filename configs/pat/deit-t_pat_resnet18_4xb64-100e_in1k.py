# PAT, DeiT-T teacher -> ResNet-18 student, ImageNet-1K. No published PAT number for this pair in
# the sources we have; the reference is OFA's 71.34 (OFA paper).
# The PAT code's ImageNet recipe for CNN students (command_imagenet.sh: 4 GPUs,
# configs/imagenet/cnn.yaml, --amp, --model-ema): 100 epochs of 4 x 64 images, SGD (Nesterov)
# lr 0.1, wd 1e-4 (none on 1-D parameters), 3 warm-up epochs from 1e-4, step decay x0.1 every 30
# epochs, label smoothing 0.1, no colour jitter; an EMA of the weights (decay 0.9998) is what
# validation reports. The data pipeline is mmpretrain's ResNet one (random resized crop 224, flip;
# resize 256, centre crop 224), as timm's defaults. Mixed precision: `--amp`.
# Teacher: mmpretrain's DeiT-T (74.50); PAT and OFA used Facebook's DeiT-T weights (72.2).
_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

train_dataloader = dict(batch_size=64)
val_dataloader = dict(batch_size=64)
test_dataloader = dict(batch_size=64)

model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student=dict(
        type='ImageClassifier',
        _scope_='mmpretrain',
        backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(3, ), style='pytorch'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=1000,
            in_channels=512,
            loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
            topk=(1, 5))),
    teacher='mmpretrain::deit/deit-tiny_4xb256_in1k.py',
    teacher_checkpoint=('https://download.openmmlab.com/mmclassification/v0/deit/'
                        'deit-tiny_pt-4xb256_in1k_20220218-13b382a0.pth'),
    input_shape=(3, 224, 224),
    methods=[
        dict(
            type='PATLoss',
            alpha=1.0,
            beta=1.0,
            gamma=1.0,
            tau=1.0,
            student_taps=dict(
                stages=['backbone.layer1', 'backbone.layer2', 'backbone.layer3', 'backbone.layer4'
                        ]),
            teacher_taps=dict(
                stages=[
                    'backbone.layers.1', 'backbone.layers.3', 'backbone.layers.9',
                    'backbone.layers.11'
                ],
                grid='backbone.patch_embed'),
            # The prompts sit where each stage starts: blocks 0, 2, 4, 10 (the reference code).
            prompt_paths=[
                'backbone.layers.0', 'backbone.layers.2', 'backbone.layers.4', 'backbone.layers.10'
            ])
    ],
)
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True),
    paramwise_cfg=dict(flat_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4 / 0.1, by_epoch=True, begin=0, end=3),
    dict(type='MultiStepLR', by_epoch=True, milestones=[30, 60, 90], gamma=0.1),
]
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
auto_scale_lr = dict(base_batch_size=256)
# The prompts are skipped at the first step (no feedback yet): DDP must allow unused parameters.
model_wrapper_cfg = dict(type='MMDistributedDataParallel', find_unused_parameters=True)
custom_hooks = [
    dict(type='EMAHook', momentum=2e-4, priority='ABOVE_NORMAL'),
    # Evaluate the teacher on the val set before training; stop if it is > 1 point below 74.50.
    dict(type='mmkd_ext.TeacherCheckHook', expected_top1=74.50),
]
