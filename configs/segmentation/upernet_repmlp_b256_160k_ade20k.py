# UperNet, RepMLPNet-B256 with 3x3 stride-2 embeddings, 160k iterations,
# ADE20K (8 GPUs x 2), the Hire-MLP recipe.
_base_ = ['./_base_/upernet_repmlp_160k.py', './_base_/ade20k.py']

pretrained = 'checkpoints/repmlpnet_b256_train.pth'
model = dict(
    backbone=dict(arch='B256', init_cfg=dict(checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
