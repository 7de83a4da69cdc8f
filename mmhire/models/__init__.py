"""The backbones; importing this registers each of them (``BACKBONES``) in
mmdet's and mmseg's model registries."""
from .backbones import (ConvMLP, DenseBackbone, HireMLP, RepMLPNet, WaveMLP,
                        identify, switch_to_deploy)
from .registry import BACKBONES, backbone_names, register_backbone

__all__ = ['BACKBONES', 'ConvMLP', 'DenseBackbone', 'HireMLP', 'RepMLPNet',
           'WaveMLP', 'backbone_names', 'identify', 'register_backbone',
           'switch_to_deploy']
