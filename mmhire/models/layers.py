"""Layers more than one backbone is built from: the token/map views of
channels-last maps, their spatial mean, the convolution-norm-activation
layer (BatchNorm folded into the convolution in the deploy form, which then
runs as one fused kernel on CPU), the pointwise MLP (on maps or vectors),
the residual block, and the weight layout of a channels-last network."""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath

from .fold import fold_bn_after
from .fused_ops import conv_act, conv_add


def tokens(x):
    """(B, C, H, W) channels-last maps -> (B, H, W, C) tokens (a view)."""
    return x.permute(0, 2, 3, 1)


def maps(x):
    """(B, H, W, C) tokens -> (B, C, H, W) channels-last maps (a view)."""
    return x.permute(0, 3, 1, 2)


def spatial_mean(x):
    """Mean over H and W of (B, C, H, W) maps, as (B, C) in their dtype,
    summed in at least float32 (a float16 sum of a large map overflows,
    whatever the mean). Plain NCHW maps are reduced in one pass; others
    rows first (torch reduces a view with gaps between its rows, such as
    Hire-MLP's width branch, ten times slower in one go, and plain NCHW
    about twenty-five times slower rows first)."""
    accumulate = torch.promote_types(x.dtype, torch.float32)
    if x.is_contiguous():
        total = x.sum((2, 3), dtype=accumulate)
    else:
        total = tokens(x).sum(1, dtype=accumulate).sum(1)
    return (total / (x.shape[2] * x.shape[3])).to(x.dtype)


def conv_norm_act(in_channels, out_channels, kernel_size, stride, padding,
                  norm_cfg, bias=False, groups=1, act=True):
    """``[conv, norm, ReLU]`` (``[conv, norm]`` without ``act``; an
    ``nn.Identity`` for the norm where ``norm_cfg`` is None), for backbones
    whose released names number these layers in a flat ``nn.Sequential``;
    ``ConvNormAct`` names them."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                        padding, groups=groups, bias=bias),
              build_norm_layer(norm_cfg, out_channels)[1] if norm_cfg
              else nn.Identity()]
    return layers + [nn.ReLU(inplace=True)] if act else layers


def run_conv_norm_act(conv, norm, act, x):
    """``act(norm(conv(x)))``; once the norm is folded away, one fused
    convolution+ReLU."""
    if isinstance(norm, nn.Identity) and act is not None:
        return conv_act(x, conv.weight, conv.bias, 'relu', conv.stride,
                        conv.padding, conv.groups)
    x = norm(conv(x))
    return act(x) if act is not None else x


def fold_conv_norm(container, conv_name, norm_name):
    """Fold ``container``'s child ``norm_name`` (a BatchNorm) into its child
    ``conv_name``, the convolution before it, and put an ``nn.Identity`` in
    the norm's place (names of an ``nn.Sequential``'s children are
    ``'0'``, ``'1'``, ...)."""
    fold_bn_after(getattr(container, conv_name),
                  getattr(container, norm_name))
    setattr(container, norm_name, nn.Identity())


class ConvNormAct(nn.Sequential):
    """conv, norm and (with ``act``) ReLU, named as given: ``names`` keeps
    the released checkpoints' keys (``conv``/``bn`` for Hire-MLP and
    RepMLPNet)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1,
                 padding=0, norm_cfg=dict(type='BN'), bias=False, groups=1,
                 act=True, names=('conv', 'bn', 'act')):
        layers = conv_norm_act(in_channels, out_channels, kernel_size, stride,
                               padding, norm_cfg, bias, groups, act)
        super().__init__(OrderedDict(zip(names, layers)))
        self.names = names

    def forward(self, x):
        conv, norm, *act = self.children()
        return run_conv_norm_act(conv, norm, act[0] if act else None, x)

    def fold(self):
        fold_conv_norm(self, *self.names[:2])


class PointwiseMLP(nn.Module):
    """Two 1x1 convolutions with a GELU between them."""

    def __init__(self, in_channels, hidden_channels, out_channels):
        super().__init__()
        self.fc1 = nn.Conv2d(in_channels, hidden_channels, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_channels, out_channels, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class VectorMLP(PointwiseMLP):
    """The same weights on an (N, C) batch of vectors, as linear layers:
    without convolution's slow path for 1x1 maps."""

    views_weights = True  # see channels_last_weights

    def forward(self, x):
        x = F.linear(x, self.fc1.weight.flatten(1), self.fc1.bias)
        return F.linear(self.act(x), self.fc2.weight.flatten(1),
                        self.fc2.bias)


def channels_last_weights(network):
    """Lay out the convolution weights of a network that runs on
    channels-last maps as their gradients come, so that DDP copies none
    into its buckets and warns of no stride mismatch. Modules that compute
    with reshaped views of their weights (``views_weights``) keep the
    standard layout, in which those views' gradients come."""
    viewed = {id(m) for module in network.modules()
              if getattr(module, 'views_weights', False)
              for m in module.modules()}
    for m in network.modules():
        if isinstance(m, nn.Conv2d) and id(m) not in viewed:
            m.weight.data = m.weight.data.to(
                memory_format=torch.channels_last)


class ResidualBlock(nn.Module):
    """Base of the blocks whose residual branches end in a convolution and
    a ``drop_path``: where no path is dropped, the residual add runs inside
    that convolution's kernel (oneDNN's, on CPU in inference)."""

    def residual(self, y, conv, x):
        """``x + drop_path(conv(y))``."""
        if self.training and isinstance(self.drop_path, DropPath):
            return x + self.drop_path(conv(y))
        return conv_add(y, conv.weight, conv.bias, x)
