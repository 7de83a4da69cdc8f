# Mask R-CNN, Hire-MLP-Large, 3x schedule, multi-scale with crops, COCO (8 GPUs x 4).
_base_ = ['./_base_/mask_rcnn_hire.py', './_base_/coco_instance_ms_crop.py',
          './_base_/schedule_3x.py']

pretrained = 'checkpoints/hire_mlp_large.pth'  # the authors released no large checkpoint
model = dict(
    backbone=dict(arch='large', drop_path_rate=0.3,
                  init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
