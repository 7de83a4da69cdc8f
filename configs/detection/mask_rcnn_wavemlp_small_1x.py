# Mask R-CNN, Wave-MLP-S, 1x schedule, COCO (8 GPUs x 2), presumed settings
# (see _base_/wavemlp_runtime.py).
_base_ = './_base_/mask_rcnn_wavemlp.py'

pretrained = 'checkpoints/WaveMLP_S.pth.tar'
model = dict(backbone=dict(arch='S', init_cfg=dict(checkpoint=pretrained)))
