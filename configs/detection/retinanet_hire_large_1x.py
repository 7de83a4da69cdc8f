# RetinaNet, Hire-MLP-Large, 1x schedule, single-scale, COCO (8 GPUs x 4).
_base_ = ['./_base_/retinanet_hire.py', './_base_/coco_detection.py',
          './_base_/schedule_1x.py']

pretrained = 'checkpoints/hire_mlp_large.pth'  # the authors released no large checkpoint
model = dict(
    backbone=dict(arch='large', drop_path_rate=0.3,
                  init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[192, 384, 768]))
