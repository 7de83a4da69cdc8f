# UperNet, Hire-MLP-Tiny, 160k iterations, ADE20K (8 GPUs x 2).
_base_ = ['./_base_/upernet_hire_160k.py', './_base_/ade20k.py']

pretrained = 'checkpoints/hire_mlp_tiny.pth'
model = dict(
    backbone=dict(arch='tiny', drop_path_rate=0.1,
                  init_cfg=dict(checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320))
