# Mask R-CNN with ConvMLP: the FPN on all four maps. COCO instances at
# data/coco/ in mmdet's layout, 1333x800, 2 images per GPU.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py',
          'mmdet::_base_/datasets/coco_instance.py', './convmlp_runtime.py']

model = dict(backbone=dict(_delete_=True, **_base_.convmlp_backbone))
