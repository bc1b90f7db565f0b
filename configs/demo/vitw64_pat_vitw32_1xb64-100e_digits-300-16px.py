# PAT from the ViT-w64 teacher into the ViT-w32 student on 300 labelled digits at 16 px.
# Train the teacher first: python tools/train.py configs/demo/vit-w64-d4-p4_1xb64-40e_digits-16px.py
# PAT's own weights (alpha = beta = gamma = 1, T = 1: its KL term is logit KD at T 1, its feature
# term a mean over elements, so no conversion is needed). Stages: the four blocks on both sides
# (4 x 4 patch grid, class token first and left out). The RAA keeps 4 x 4 regions per stage (one
# patch each here) and is scaled to the models: d 64 and 4 heads instead of 512 and 8; a prompt
# before each teacher block.
_base_ = ['./vit-w32-d4-p4_1xb64-100e_digits-300-16px.py']  # the student's recipe

model = dict(
    _delete_=True,
    type='mmkd_ext.Distiller',
    student='{{ fileDirname }}/vit-w32-d4-p4_1xb64-100e_digits-300-16px.py',
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
            student_taps=dict(
                stages=[f'backbone.layers.{i}' for i in range(4)], grid='backbone.patch_embed'),
            teacher_taps=dict(
                stages=[f'backbone.layers.{i}' for i in range(4)], grid='backbone.patch_embed'),
            raa=dict(embed_dims=64, num_heads=4))
    ],
)
# The prompts are skipped at the first step (no feedback yet): DDP must allow unused parameters.
model_wrapper_cfg = dict(type='MMDistributedDataParallel', find_unused_parameters=True)
