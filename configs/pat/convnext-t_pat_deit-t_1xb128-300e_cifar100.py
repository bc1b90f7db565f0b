# PAT, ConvNeXt-T teacher -> DeiT-T student, CIFAR-100 at 224 px. Published (PAT paper): 79.59
# (OFA 75.76, DeiT-T alone 68.00 in OFA's table).
# The PAT code's recipe (command_cifar.sh: 1 GPU, --config configs/cifar/vit_mlp.yaml, --amp,
# --model-ema): 300 epochs of 128 images, AdamW 5e-4, RandAugment, random erasing, Mixup/CutMix,
# label smoothing 0.1 (../_base_/datasets/cifar100_bs128_randaug.py,
# ../_base_/schedules/cifar100_adamw_300e.py, the student's model file); an EMA of the weights is
# what validation reports (timm's --model-ema, decay 0.9998). Mixed precision: `--amp`.
# PAT's defaults: alpha = beta = gamma = 1, T = 1; RAA 4 x 4 regions per stage, d 512, 8 heads;
# a prompt before each of the four teacher stages.
_base_ = [
    '../_base_/datasets/cifar100_bs128_randaug.py', '../_base_/schedules/cifar100_adamw_300e.py',
    'mmpretrain::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmkd_ext'], allow_failed_imports=False)

model = dict(
    type='mmkd_ext.Distiller',
    student='{{ fileDirname }}/../_base_/models/cifar100/deit-t.py',
    teacher='{{ fileDirname }}/../_base_/models/cifar100/convnext-t.py',
    # OFA's released CIFAR-100 ConvNeXt-T (convnext_tiny_cifar100.pth) in mmpretrain's key names,
    # see README.md.
    teacher_checkpoint='checkpoints/cifar100/convnext-t_cifar100.pth',
    input_shape=(3, 224, 224),
    methods=[
        dict(
            type='PATLoss',
            alpha=1.0,
            beta=1.0,
            gamma=1.0,
            tau=1.0,
            # DeiT-T blocks 1, 3, 9, 11 (tokens, class token first); ConvNeXt-T's four stages.
            student_taps=dict(
                stages=[
                    'backbone.layers.1', 'backbone.layers.3', 'backbone.layers.9',
                    'backbone.layers.11'
                ],
                grid='backbone.patch_embed'),
            teacher_taps=dict(stages=[
                'backbone.stages.0', 'backbone.stages.1', 'backbone.stages.2', 'backbone.stages.3'
            ]),
            # A stage starts where the previous one ended: mmpretrain's ConvNeXt keeps its
            # downsampling layers outside its stages (timm's stages, which the reference prompts,
            # begin with them).
            prompt_paths=[
                'backbone.stages.0', 'backbone.downsample_layers.1', 'backbone.downsample_layers.2',
                'backbone.downsample_layers.3'
            ])
    ],
)
# The prompts are skipped at the first step (no feedback yet): DDP must allow unused parameters.
model_wrapper_cfg = dict(type='MMDistributedDataParallel', find_unused_parameters=True)
custom_hooks = [dict(type='EMAHook', momentum=2e-4, priority='ABOVE_NORMAL')]
auto_scale_lr = dict(base_batch_size=128)
