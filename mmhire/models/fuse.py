"""Folding eval-mode BatchNorm into the convolutions next to it.

A BatchNorm in eval mode is a per-channel affine map ``y = x * scale +
shift``. After a convolution it folds into that convolution's output
channels; before one it folds into its input channels (exactly, also where
the input is first rolled, padded or gathered along space, since those moves
commute with a per-channel map).
"""
import torch
import torch.nn as nn


def bn_affine(bn):
    """``(scale, shift)`` of an eval-mode BatchNorm."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


@torch.no_grad()
def fold_bn_after(conv, bn):
    """Make ``conv`` compute ``bn(conv(x))``."""
    scale, shift = bn_affine(bn)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter(bias * scale + shift)


@torch.no_grad()
def fold_bn_before(conv, bn):
    """Make ``conv`` compute ``conv(bn(x))``; ``conv`` may read each input
    channel at several positions (``in_channels = C * k``, channel
    ``c * k + i``), as the hire module's region MLPs do."""
    scale, shift = bn_affine(bn)
    out_channels = conv.weight.shape[0]
    weight = conv.weight.view(out_channels, scale.numel(), -1)
    extra = (weight * shift.view(1, -1, 1)).sum((1, 2))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(extra)
    weight.mul_(scale.view(1, -1, 1))
    conv.bias = nn.Parameter(bias + extra)
