# Mask R-CNN with RepMLPNet: the Hire-MLP Mask R-CNN recipe (optimizer,
# data, schedule) with RepMLPNet in place of Hire-MLP.
_base_ = ['./mask_rcnn_hire.py', '../../_base_/repmlp_net.py']

model = dict(backbone=dict(_delete_=True, **_base_.repmlp_backbone))
