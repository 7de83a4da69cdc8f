# Semantic FPN, Hire-MLP-Small, 40k iterations, ADE20K (8 GPUs x 2).
_base_ = ['./_base_/fpn_hire_40k.py', './_base_/ade20k.py']

pretrained = 'checkpoints/hire_mlp_small.pth'
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.2,
                  init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 320, 512]))
