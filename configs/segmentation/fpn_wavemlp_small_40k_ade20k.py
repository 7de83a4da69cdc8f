# Semantic FPN, Wave-MLP-S, 40k iterations, ADE20K (8 GPUs x 4), presumed
# settings (see _base_/fpn_wavemlp_40k.py).
_base_ = './_base_/fpn_wavemlp_40k.py'

pretrained = 'checkpoints/WaveMLP_S.pth.tar'
model = dict(backbone=dict(arch='S', init_cfg=dict(checkpoint=pretrained)))
