from .base import DenseBackbone, switch_to_deploy
from .conv_mlp import ConvMLP
from .hire_mlp import HireMLP

BACKBONES = (HireMLP, ConvMLP)

__all__ = ['BACKBONES', 'ConvMLP', 'DenseBackbone', 'HireMLP',
           'switch_to_deploy']
