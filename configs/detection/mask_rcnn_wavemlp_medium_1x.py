# Mask R-CNN, Wave-MLP-M, 1x schedule, COCO (8 GPUs x 2), presumed settings
# (see _base_/wavemlp_runtime.py).
_base_ = './_base_/mask_rcnn_wavemlp.py'

pretrained = 'checkpoints/WaveMLP_M.pth.tar'
model = dict(backbone=dict(arch='M', init_cfg=dict(checkpoint=pretrained)))
