# UperNet with RepMLPNet-T256 (3x3 embeddings) on generated Cityscapes-format
# data (mmhire.datasets.synthetic.make_cityscapes_shapes: the real directory
# layout and *_gtFine_labelTrainIds.png files, read by CityscapesDataset),
# trainable on two CPU cores in about 12 minutes (tools/demo.py segmentation
# --backbone repmlp_net makes the data). It inherits the real config and
# changes only what must change: the data root and its scale (128x256
# frames, used whole), the schedule, BN for SyncBN and no pretrained file
# (so it trains from scratch).
_base_ = '../upernet_repmlp_t256_80k_cityscapes.py'

data_root = 'data/synthetic_cityscapes/'
scale = (256, 128)
crop_size = (128, 256)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(norm_cfg=norm_cfg, init_cfg=None),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=dict(norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=scale, ratio_range=(0.5, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale_factor=r, keep_ratio=True)
         for r in (0.75, 1.0, 1.25)],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')],
        [dict(type='PackSegInputs')],
    ]),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

# From scratch and briefly: a short polynomial schedule.
max_iters = 200
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=1e-4, begin=0, end=max_iters,
         by_epoch=False),
]
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(interval=max_iters))
randomness = dict(seed=0)
