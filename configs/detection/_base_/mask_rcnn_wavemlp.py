# Mask R-CNN with Wave-MLP: the FPN on all four maps, as PoolFormer's Mask
# R-CNN config (presumed). COCO instances at data/coco/ in mmdet's layout,
# 1333x800, 2 images per GPU.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py',
          'mmdet::_base_/datasets/coco_instance.py', './wavemlp_runtime.py']

model = dict(
    backbone=dict(_delete_=True, **_base_.wavemlp_backbone),
    neck=dict(in_channels=[64, 128, 320, 512]))
