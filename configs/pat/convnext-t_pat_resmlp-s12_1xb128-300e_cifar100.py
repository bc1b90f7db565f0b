# PAT, ConvNeXt-T teacher -> ResMLP-S12 student, CIFAR-100 at 224 px. Published (PAT paper): 83.50
# (OFA 81.22). The ViT/MLP recipe of the PAT code, as convnext-t_pat_deit-t_1xb128-300e_cifar100.py;
# the student's stages: ResMLP blocks 1, 3, 9, 11 (patch tokens, no class token).
_base_ = ['./convnext-t_pat_deit-t_1xb128-300e_cifar100.py']

model = dict(
    student='{{ fileDirname }}/../_base_/models/cifar100/resmlp-s12.py',
    methods=[
        dict(
            type='PATLoss',
            alpha=1.0,
            beta=1.0,
            gamma=1.0,
            tau=1.0,
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
