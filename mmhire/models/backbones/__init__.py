from .base import DenseBackbone, identify, switch_to_deploy
from .conv_mlp import ConvMLP
from .hire_mlp import HireMLP
from .repmlp_net import RepMLPNet

__all__ = ['ConvMLP', 'DenseBackbone', 'HireMLP', 'RepMLPNet', 'identify',
           'switch_to_deploy']
