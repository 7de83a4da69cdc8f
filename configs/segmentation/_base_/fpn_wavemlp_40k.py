# Semantic FPN with Wave-MLP on ADE20K. Presumed (the paper's settings are
# not available): those of the PoolFormer configs the authors' dense code
# comes from, fpn_adamw_40k.py.
_base_ = ['./fpn_adamw_40k.py', './wavemlp_runtime.py']

model = dict(
    backbone=dict(_delete_=True, **_base_.wavemlp_backbone),
    neck=dict(in_channels=[64, 128, 320, 512]))
