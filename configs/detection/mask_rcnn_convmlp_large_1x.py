# Mask R-CNN, ConvMLP-L, 1x schedule, COCO (8 GPUs x 2), the authors' setting.
_base_ = './_base_/mask_rcnn_convmlp.py'

pretrained = 'checkpoints/convmlp_l_imagenet.pth'
model = dict(
    backbone=dict(arch='large', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
