# The demo ViT student: the teacher's layout at width 16 (2 heads, MLP 32), about 10 k params.
_base_ = ['./vit-w64-d4_1xb64-10e_digits.py']
model = dict(
    backbone=dict(arch=dict(embed_dims=16, num_layers=4, num_heads=2, feedforward_channels=32)),
    head=dict(in_channels=16),
)
