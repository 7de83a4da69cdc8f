# RetinaNet with Wave-MLP, as PoolFormer's RetinaNet config (presumed): the
# FPN reads maps 1-3 (start_level=1) and makes P6 from map 3 itself
# (add_extra_convs='on_input'). COCO at data/coco/ in mmdet's layout,
# 1333x800, 2 images per GPU.
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py',
          'mmdet::_base_/datasets/coco_detection.py', './wavemlp_runtime.py']

model = dict(
    backbone=dict(_delete_=True, **_base_.wavemlp_backbone),
    neck=dict(in_channels=[64, 128, 320, 512], start_level=1,
              add_extra_convs='on_input', num_outs=5))
