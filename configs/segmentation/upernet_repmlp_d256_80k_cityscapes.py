# UperNet, RepMLPNet-D256 with 3x3 stride-2 embeddings, 80k iterations,
# Cityscapes 512x1024 crops (4 GPUs x 2). Paper Table 6: 76.27 mIoU.
_base_ = './_base_/upernet_repmlp_80k_cityscapes.py'

pretrained = 'checkpoints/repmlpnet_d256_train.pth'
model = dict(
    backbone=dict(arch='D256', init_cfg=dict(checkpoint=pretrained)),
    decode_head=dict(in_channels=[80, 160, 320, 640]),
    auxiliary_head=dict(in_channels=320))
