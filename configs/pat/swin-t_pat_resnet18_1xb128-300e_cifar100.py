# PAT, Swin-T teacher -> ResNet-18 student, CIFAR-100 at 224 px. Published (PAT paper): 81.22
# (OFA 80.54, ResNet-18 alone 74.01 in OFA's table).
# The PAT code's recipe for CNN students (command_cifar.sh: 1 GPU, --config configs/cifar/cnn.yaml,
# --amp, --model-ema): 300 epochs of 128 images, SGD (Nesterov) lr 0.05, wd 2e-3, cosine, 3
# warm-up epochs, label smoothing 0.1 (../_base_/datasets/cifar100_bs128.py,
# ../_base_/schedules/cifar100_sgd_300e.py); an EMA of the weights (decay 0.9998) is what
# validation reports. Mixed precision: `--amp`.
# PAT's defaults: alpha = beta = gamma = 1, T = 1; RAA 4 x 4 regions per stage, d 512, 8 heads;
# a prompt before each of the four teacher stages.
_base_ = [
    '../_base_/datasets/cifar100_bs128.py', '../_base_/schedules/cifar100_sgd_300e.py',
    'mmpretrain::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

model = dict(
    type='mmkd_ext.Distiller',
    student='{{ fileDirname }}/../_base_/models/cifar100/resnet18.py',
    teacher='{{ fileDirname }}/../_base_/models/cifar100/swin-t.py',
    # OFA's released CIFAR-100 Swin-T (swin_tiny_patch4_window7_224_cifar100.pth) in mmpretrain's
    # key names, see README.md.
    teacher_checkpoint='checkpoints/cifar100/swin-t_cifar100.pth',
    input_shape=(3, 224, 224),
    methods=[
        dict(
            type='PATLoss',
            alpha=1.0,
            beta=1.0,
            gamma=1.0,
            tau=1.0,
            # ResNet-18 layer1-4; Swin-T blocks 1, 3, 9, 11 counted across the model (depths
            # 2, 2, 6, 2): tokens (B, L, C), their grid comes with each block's call.
            student_taps=dict(
                stages=['backbone.layer1', 'backbone.layer2', 'backbone.layer3', 'backbone.layer4'
                        ]),
            teacher_taps=dict(stages=[
                'backbone.stages.0.blocks.1', 'backbone.stages.1.blocks.1',
                'backbone.stages.2.blocks.5', 'backbone.stages.3.blocks.1'
            ]),
            # The prompts sit where each stage starts: blocks 0, 2, 4, 10 (the reference code).
            prompt_paths=[
                'backbone.stages.0.blocks.0', 'backbone.stages.1.blocks.0',
                'backbone.stages.2.blocks.0', 'backbone.stages.3.blocks.0'
            ])
    ],
)
# The prompts are skipped at the first step (no feedback yet): DDP must allow unused parameters.
model_wrapper_cfg = dict(type='MMDistributedDataParallel', find_unused_parameters=True)
custom_hooks = [dict(type='EMAHook', momentum=2e-4, priority='ABOVE_NORMAL')]
auto_scale_lr = dict(base_batch_size=128)
