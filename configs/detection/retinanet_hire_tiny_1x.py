# RetinaNet, Hire-MLP-Tiny, 1x schedule, single-scale, COCO (8 GPUs x 4).
_base_ = ['./_base_/retinanet_hire.py', './_base_/coco_detection.py',
          './_base_/schedule_1x.py']

pretrained = 'checkpoints/hire_mlp_tiny.pth'
model = dict(
    backbone=dict(arch='tiny', drop_path_rate=0.1,
                  init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[128, 320, 512]))
