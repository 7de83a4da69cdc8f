# The detection demo with Wave-MLP-T in place of Hire-MLP-Tiny
# (tools/demo.py detection --backbone wave_mlp): the same generated data,
# schedule and optimizer, trained from scratch; the backbone as in the
# Wave-MLP configs (a norm on each map, no drop path).
_base_ = './mask_rcnn_hire_tiny_synthetic.py'

model = dict(
    backbone=dict(_delete_=True, type='WaveMLP', arch='T', init_cfg=None),
    neck=dict(in_channels=[64, 128, 320, 512]))
