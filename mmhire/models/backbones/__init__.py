from .base import DenseBackbone, switch_to_deploy
from .conv_mlp import ConvMLP
from .hire_mlp import HireMLP
from .repmlp_net import RepMLPNet

# RepMLPNet first: mmpretrain's RepMLPNet names start with 'patch_embed.', as
# the Hire-MLP authors' do.
BACKBONES = (RepMLPNet, HireMLP, ConvMLP)

__all__ = ['BACKBONES', 'ConvMLP', 'DenseBackbone', 'HireMLP', 'RepMLPNet',
           'switch_to_deploy']
