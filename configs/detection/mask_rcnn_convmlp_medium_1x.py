# Mask R-CNN, ConvMLP-M, 1x schedule, COCO (8 GPUs x 2), the authors' setting.
_base_ = './_base_/mask_rcnn_convmlp.py'

pretrained = 'checkpoints/convmlp_m_imagenet.pth'
model = dict(
    backbone=dict(arch='medium', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))
