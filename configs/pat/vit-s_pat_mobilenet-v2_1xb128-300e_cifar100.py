# PAT, ViT-S teacher -> MobileNetV2 student, CIFAR-100 at 224 px. Published (PAT paper): 78.87
# (OFA 78.45). The CNN-student recipe of the PAT code, as
# swin-t_pat_resnet18_1xb128-300e_cifar100.py.
_base_ = ['./swin-t_pat_resnet18_1xb128-300e_cifar100.py']

model = dict(
    student='{{ fileDirname }}/../_base_/models/cifar100/mobilenet-v2.py',
    teacher='{{ fileDirname }}/../_base_/models/cifar100/vit-s.py',
    # OFA's released CIFAR-100 ViT-S (vit_small_patch16_224_cifar100.pth) in mmpretrain's key
    # names, see README.md.
    teacher_checkpoint='checkpoints/cifar100/vit-s_cifar100.pth',
    methods=[
        dict(
            type='PATLoss',
            alpha=1.0,
            beta=1.0,
            gamma=1.0,
            tau=1.0,
            # MobileNetV2 blocks 2, 5, 12, 17 of timm's block list (the ends of the 24, 32 and 96
            # channel stages and the 1280-channel head conv); ViT-S blocks 1, 3, 9, 11 (class token
            # first, dropped; patch grid from the patch embedding).
            student_taps=dict(
                stages=['backbone.layer2', 'backbone.layer3', 'backbone.layer5', 'backbone.conv2']),
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
