"""Folding eval-mode BatchNorm (and LayerNorm's affine part) into the
layers next to it.

A BatchNorm in eval mode is a per-channel affine map ``y = x * scale +
shift``; so is a LayerNorm's weight and bias, after its normalisation. After
a convolution it folds into that convolution's output channels; before a
convolution or linear layer it folds into its input channels (exactly, also
where the input is first rolled, padded or gathered along space, since those
moves commute with a per-channel map; not where zero padding follows it).
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


def fold_bn_before(conv, bn):
    """Make ``conv`` compute ``conv(bn(x))``; ``conv`` may read each input
    channel at several positions (``in_channels = C * k``, channel
    ``c * k + i``), as the hire module's region MLPs do."""
    fold_affine_before(conv, *bn_affine(bn))


@torch.no_grad()
def fold_affine_before(layer, scale, shift):
    """Make ``layer`` (a convolution as in ``fold_bn_before``, or a linear
    layer) compute ``layer(x * scale + shift)``, per input channel."""
    out_channels = layer.weight.shape[0]
    weight = layer.weight.view(out_channels, scale.numel(), -1)
    extra = (weight * shift.view(1, -1, 1)).sum((1, 2))
    bias = layer.bias if layer.bias is not None else torch.zeros_like(extra)
    weight.mul_(scale.view(1, -1, 1))
    layer.bias = nn.Parameter(bias + extra)
