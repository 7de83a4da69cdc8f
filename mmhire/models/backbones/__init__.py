from .base import DenseBackbone, identify, switch_to_deploy
from .conv_mlp import ConvMLP
from .hire_mlp import HireMLP
from .repmlp_net import RepMLPNet
from .wave_mlp import WaveMLP

__all__ = ['ConvMLP', 'DenseBackbone', 'HireMLP', 'RepMLPNet', 'WaveMLP',
           'identify', 'switch_to_deploy']
