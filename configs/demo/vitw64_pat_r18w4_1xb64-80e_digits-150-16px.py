# PAT from the ViT-w64 teacher (all 1,347 digits, 16 px, 4x4 patch grid) into the ResNet-18-w4
# student that sees 150 labelled digits at 16 px: the cross-architecture pair PAT is for.
# Train the teacher first: python tools/train.py configs/demo/vit-w64-d4-p4_1xb64-40e_digits-16px.py
# PAT's own weights, untuned (alpha = beta = gamma = 1, T = 1; the student's cross-entropy at
# weight 1). Stages: the student's layer1-4 (4 @ 16x16 ... 32 @ 2x2) and the teacher's four blocks
# (64 @ 4x4 patch tokens, class token first and left out), a prompt before each block. The RAA
# keeps 4 x 4 regions per stage and is scaled to the models: d 64 and 4 heads instead of 512 and 8.
_base_ = ['./resnet18-w4_1xb64-80e_digits-150-16px.py']  # the student's recipe

model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student='{{ fileDirname }}/resnet18-w4_1xb64-80e_digits-150-16px.py',
    teacher='{{ fileDirname }}/vit-w64-d4-p4_1xb64-40e_digits-16px.py',
    teacher_checkpoint='work_dirs/vit-w64-d4-p4_1xb64-40e_digits-16px/epoch_40.pth',
    input_shape=(1, 16, 16),
    methods=[
        dict(
            type='PATLoss',
            alpha=1.0,
            beta=1.0,
            gamma=1.0,
            tau=1.0,
            student_taps=dict(stages=[f'backbone.layer{i}' for i in range(1, 5)]),
            teacher_taps=dict(
                stages=[f'backbone.layers.{i}' for i in range(4)], grid='backbone.patch_embed'),
            raa=dict(embed_dims=64, num_heads=4))
    ],
)
# Gradient clipping: without it, at the student's SGD lr 0.05 the prompted teacher's features blow
# up once the prompt gates open (HCL 14 -> 7e4 -> NaN at iteration 11, seed 0); clipped at 5 it
# trains.
optim_wrapper = dict(clip_grad=dict(max_norm=5.0))
# The prompts are skipped at the first step (no feedback yet): DDP must allow unused parameters.
model_wrapper_cfg = dict(type='MMDistributedDataParallel', find_unused_parameters=True)
