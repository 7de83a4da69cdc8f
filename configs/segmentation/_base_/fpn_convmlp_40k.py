# Semantic FPN with ConvMLP on ADE20K, the authors' mmseg 0.x config.
_base_ = ['./fpn_adamw_40k.py', './convmlp_runtime.py']

model = dict(backbone=dict(_delete_=True, **_base_.convmlp_backbone))
