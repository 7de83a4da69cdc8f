# Mask R-CNN, RepMLPNet-T256, 1x schedule, COCO (8 GPUs x 4), the Hire-MLP
# recipe. COCO's sizes are no multiple of the FC patch: each block pads its
# map to whole patches and crops back (the released 2x2 embeddings stay).
_base_ = ['./_base_/mask_rcnn_repmlp.py', './_base_/coco_instance.py',
          './_base_/schedule_1x.py']

pretrained = 'checkpoints/repmlpnet_t256_train.pth'
model = dict(
    backbone=dict(arch='T256', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))
