# Mask R-CNN with Hire-MLP.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py', './hire_runtime.py']

model = dict(backbone=dict(_delete_=True, **_base_.hire_backbone))
