# UperNet, Hire-MLP-Large, 160k iterations, ADE20K (8 GPUs x 2).
_base_ = ['./_base_/upernet_hire_160k.py', './_base_/ade20k.py']

pretrained = 'checkpoints/hire_mlp_large.pth'  # the authors released no large checkpoint
model = dict(
    backbone=dict(arch='large', drop_path_rate=0.3,
                  init_cfg=dict(checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
