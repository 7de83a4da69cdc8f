# UperNet with RepMLPNet on ADE20K: the Hire-MLP UperNet recipe (AdamW, lr
# 6e-5, 160k iterations; see upernet_hire_160k.py) with RepMLPNet in place
# of Hire-MLP, so that the two compare on the same footing. The RepMLPNet
# paper reports no ADE20K result. Presumed: the 3x3 stride-2 embeddings of
# the paper's Cityscapes experiments (512x512 crops hold 2x2 FC patches on
# the *256 variants, as Cityscapes crops hold 2x4).
_base_ = ['./upernet_hire_160k.py', '../../_base_/repmlp_net.py']

model = dict(backbone=dict(_delete_=True, **{**_base_.repmlp_backbone,
                                             'embed_kernel': 3}))
