# RetinaNet with Hire-MLP. The backbone emits only the three levels (strides
# 8, 16, 32) that RetinaNet's FPN reads, so no output goes unused.
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py', './hire_runtime.py']

model = dict(
    backbone=dict(_delete_=True, **_base_.hire_backbone,
                  out_indices=(1, 2, 3)),
    neck=dict(in_channels=[128, 320, 512], start_level=0))
