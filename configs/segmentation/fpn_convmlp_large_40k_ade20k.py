# Semantic FPN, ConvMLP-L, 40k iterations, ADE20K (8 GPUs x 4), the
# authors' setting.
_base_ = './_base_/fpn_convmlp_40k.py'

pretrained = 'checkpoints/convmlp_l_imagenet.pth'
model = dict(
    backbone=dict(arch='large', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
