# RetinaNet with ConvMLP, as the authors' config merged onto mmdet's: the FPN
# reads maps 1-3 (start_level=1) and makes P6 from map 3 itself
# (add_extra_convs='on_input'); map 0 is computed but unused. COCO at
# data/coco/ in mmdet's layout, 1333x800, 2 images per GPU.
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py',
          'mmdet::_base_/datasets/coco_detection.py', './convmlp_runtime.py']

model = dict(
    backbone=dict(_delete_=True, **_base_.convmlp_backbone),
    neck=dict(start_level=1, add_extra_convs='on_input', num_outs=5))
