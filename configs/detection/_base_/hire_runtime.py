# What every Hire-MLP detector shares: the plugin and its backbone, the
# optimizer of the supplement (C.1) and mmdet's default runtime.
_base_ = ['mmdet::_base_/default_runtime.py', '../../_base_/hire_mlp.py']

# Supplement C.1: AdamW, lr 2e-4, weight decay 0.05, 4 images per GPU on 8
# GPUs. It is silent on decay for norms: none, as mmdet's Swin configs do.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999),
                   weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.))

# --auto-scale-lr rescales lr by (GPUs x images per GPU) / 32.
auto_scale_lr = dict(enable=False, base_batch_size=32)
