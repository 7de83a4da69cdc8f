# Semantic FPN with Hire-MLP-Tiny on the built-in generated regions (ADE20K
# layout, label 0 ignored), trainable on two CPU cores in minutes
# (tools/demo.py segmentation makes the data). It inherits the real config
# and changes only what must change: the data and its scale (128-pixel
# images, 128x128 crops), the schedule, BN for SyncBN and no pretrained file
# (so it trains from scratch).
_base_ = '../fpn_hire_tiny_40k_ade20k.py'

data_root = 'data/synthetic_ade'
metainfo = dict(
    classes=('striped ground', 'speckled ground', 'circle', 'square',
             'triangle'),
    palette=[(200, 200, 0), (0, 200, 200), (220, 60, 50), (60, 180, 75),
             (70, 90, 230)])
train_scale = (512, 128)
crop_size = (128, 128)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(norm_cfg=norm_cfg, init_cfg=None),
    decode_head=dict(num_classes=5, norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=train_scale, ratio_range=(0.5, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=train_scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', keep_ratio=True,
              scale=(int(train_scale[0] * r), int(train_scale[1] * r)))
         for r in (0.5, 0.75, 1.0, 1.25, 1.5)],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')],
        [dict(type='PackSegInputs')],
    ]),
]
dataset = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
               reduce_zero_label=True, img_suffix='.jpg',
               seg_map_suffix='.png')
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(**dataset, pipeline=train_pipeline, data_prefix=dict(
        img_path='images/training', seg_map_path='annotations/training')))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(**dataset, pipeline=test_pipeline, data_prefix=dict(
        img_path='images/validation', seg_map_path='annotations/validation')))
test_dataloader = val_dataloader

# From scratch and briefly: a higher lr over a short polynomial schedule.
max_iters = 300
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=max_iters,
         by_epoch=False),
]
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(interval=max_iters))
randomness = dict(seed=0)
