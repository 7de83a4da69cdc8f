# Cascade Mask R-CNN, Hire-MLP-Small, 1x schedule, single-scale, COCO (8 GPUs x 4).
_base_ = ['./_base_/cascade_mask_rcnn_hire.py', './_base_/coco_instance.py',
          './_base_/schedule_1x.py']

pretrained = 'checkpoints/hire_mlp_small.pth'
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.2,
                  init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 320, 512]))
