# Mask R-CNN with Hire-MLP-Tiny on the built-in generated shapes, trainable on
# two CPU cores in minutes (tools/demo.py detection makes the data). It
# inherits the real config and changes only what must change: the data and
# its image size, the schedule, BN for SyncBN, no pretrained file (so it
# trains from scratch) and, for images with at most four objects, fewer
# sampled RoIs.
_base_ = '../mask_rcnn_hire_tiny_1x.py'

data_root = 'data/synthetic_coco/'
metainfo = dict(classes=('circle', 'square', 'triangle'),
                palette=[(220, 60, 50), (60, 180, 75), (70, 90, 230)])
image_size = (160, 160)

model = dict(
    backbone=dict(norm_cfg=dict(type='BN', requires_grad=True),
                  init_cfg=None),
    roi_head=dict(bbox_head=dict(num_classes=3), mask_head=dict(num_classes=3)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=500),
                   rcnn=dict(sampler=dict(num=64))))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor')),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/train.json',
                 data_prefix=dict(img='train/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/val.json',
                 data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator

# From scratch and briefly: a higher lr, a short warm-up, one lr step.
max_epochs = 2
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=40),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=False,
         milestones=[100], gamma=0.1),
]
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(interval=max_epochs))
randomness = dict(seed=0)
