# The RepMLPNet backbone that frameworks put in model.backbone; each config
# sets arch, the embedding kernel and the released ImageNet checkpoint. (The
# configs that use it import mmhire themselves: they inherit from the
# Hire-MLP recipes, or from mmseg's stock Cityscapes setting.)
#
# As released: the ImageNet FC patch sizes, no drop path, all four stage
# maps. SyncBN as in mmseg's and mmdet's stock settings (tools/train.py falls
# back to BN without CUDA or in a single process). Presumed, the paper being
# silent: a fresh norm on each output (out_norm), as Hire-MLP and Swin add
# for dense heads.
repmlp_backbone = dict(
    type='RepMLPNet',
    arch='T256',
    out_indices=(0, 1, 2, 3),
    embed_kernel=2,
    norm_cfg=dict(type='SyncBN', requires_grad=True),
    out_norm=True,
    init_cfg=dict(type='Pretrained', checkpoint=None))
