# Mask R-CNN, ConvMLP-S, 1x schedule, COCO (8 GPUs x 2), the authors' setting.
_base_ = './_base_/mask_rcnn_convmlp.py'

pretrained = 'checkpoints/convmlp_s_imagenet.pth'
model = dict(
    backbone=dict(arch='small', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))
