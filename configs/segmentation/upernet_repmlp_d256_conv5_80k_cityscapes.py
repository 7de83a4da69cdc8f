# UperNet, RepMLPNet-D256 with 5x5 stride-2 embeddings ("conv5"), 80k
# iterations, Cityscapes. Paper Table 6: 77.12 mIoU. The paper's +0.15G
# FLOPs over the 3x3 row fit a depthwise 5x5 layer better than a dense one,
# which would add about 20G; the exact layer is not published. This is the
# dense 5x5 (the released 2x2 weights load at its centre).
_base_ = './upernet_repmlp_d256_80k_cityscapes.py'

model = dict(backbone=dict(embed_kernel=5))
