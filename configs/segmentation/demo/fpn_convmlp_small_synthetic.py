# The segmentation demo with ConvMLP-S in place of Hire-MLP-Tiny
# (tools/demo.py segmentation --backbone conv_mlp): the same generated data,
# schedule and optimizer, trained from scratch; the backbone as in the
# ConvMLP configs (BN, drop path 0.1 per stage, the authors' four maps).
_base_ = './fpn_hire_tiny_synthetic.py'

model = dict(
    backbone=dict(_delete_=True, type='ConvMLP', arch='small', init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512]))
