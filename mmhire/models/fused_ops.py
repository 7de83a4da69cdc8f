"""Convolutions with the following activation or residual add fused in, for
inference on CPU.

oneDNN (mkldnn) applies the activation or the add while the convolution's
output is still in cache, instead of in another pass over memory; PyTorch
exposes this as ``torch.ops.mkldnn._convolution_pointwise`` (what
``torch.compile`` emits on CPU). It is used only where autograd is off, on
float32 CPU tensors outside autocast, tracing and export (where it is exact);
everywhere else, and where the op is missing, the same arithmetic runs as
plain PyTorch.
"""
import torch
import torch.nn.functional as F

_POINTWISE = (getattr(torch.ops.mkldnn, '_convolution_pointwise', None)
              if torch.backends.mkldnn.is_available() else None)
_ACTIVATIONS = {'relu': F.relu, 'gelu': F.gelu}


def fusable(x):
    return (_POINTWISE is not None and x.device.type == 'cpu'
            and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled('cpu')
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling())


def conv_act(x, weight, bias, act, stride=(1, 1), padding=(0, 0), groups=1):
    """``act(conv2d(x, weight, bias))`` with ``act`` 'relu' or 'gelu'
    (exact)."""
    if fusable(x):
        return _POINTWISE(x, weight, bias, list(padding), list(stride),
                          [1, 1], groups, act, [],
                          'none' if act == 'gelu' else None)  # exact GELU
    return _ACTIVATIONS[act](F.conv2d(x, weight, bias, stride, padding, 1,
                                      groups))


def conv_add(x, weight, bias, residual):
    """``residual + conv2d(x, weight, bias)`` for a 1x1 convolution."""
    if fusable(x):
        return _POINTWISE.binary(x, residual, weight, bias, [0, 0], [1, 1],
                                 [1, 1], 1, 'add', 1.0, None, [], None)
    return residual + F.conv2d(x, weight, bias)
