# AdamW with weight decay 1e-4 on every parameter, 2 images per GPU on 8
# GPUs, 12 epochs with lr / 10 at 8 and 11 after 500 iterations of linear
# warm-up, on mmdet's default runtime: the ConvMLP authors' detection
# setting (lr 1e-4) and PoolFormer's, which the Wave-MLP configs presume
# (lr 2e-4). Where it differs from the Hire-MLP detectors: lr and weight
# decay (Hire-MLP: 2e-4, 0.05, no decay on norms), 2 images per GPU
# (Hire-MLP: 4), 500 warm-up iterations (Hire-MLP: 1000, presumed).
_base_ = ['mmdet::_base_/default_runtime.py', './schedule_1x.py']

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                   weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True,
         milestones=[8, 11], gamma=0.1),
]

# --auto-scale-lr rescales lr by (GPUs x images per GPU) / 16.
auto_scale_lr = dict(enable=False, base_batch_size=16)
