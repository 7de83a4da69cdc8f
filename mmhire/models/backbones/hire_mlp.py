"""Hire-MLP (Guo et al., CVPR 2022) as a four-level backbone for dense tasks.

The network is the one behind the authors' released ImageNet checkpoints
(``docs/hire_mlp.md``), not the simplified Algorithm A-1 of the supplement:
each hire module has a bottleneck MLP per axis and combines its three
branches with split attention.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model.weight_init import trunc_normal_init
from torch.nn.modules.batchnorm import _BatchNorm

from mmhire.errors import ArchError
from mmhire.models.fold import fold_bn_after, fold_bn_before
from mmhire.models.fused_ops import conv_act, fusable
from mmhire.models.layers import (ConvNormAct, PointwiseMLP, ResidualBlock,
                                  VectorMLP, maps, spatial_mean, tokens)
from mmhire.models.registry import register_backbone
from .base import DenseBackbone
from .flat_network_names import released_to_mmhire

ARCH_KEYS = ('depths', 'channels', 'region_sizes', 'shift_sizes',
             'shift_periods')
_STANDARD = dict(region_sizes=(4, 3, 3, 2), shift_sizes=(2, 2, 1, 1),
                 shift_periods=(2, 2, 3, 2))


def _per_token(norm):
    """Whether ``norm`` treats each token on its own (so that a block can
    run on tiles): folded away, or a BatchNorm using running statistics."""
    return isinstance(norm, nn.Identity) or (
        isinstance(norm, _BatchNorm) and not norm.training
        and norm.track_running_stats)


class _TokenGather(torch.autograd.Function):
    """``x[:, rows, slots]`` where no token of ``x`` is taken twice. Its
    backward scatters the gradient back in place, three times faster than
    the sorting, accumulating ``index_put_`` of torch's own indexing."""

    @staticmethod
    def forward(ctx, x, rows, slots):
        ctx.save_for_backward(rows, slots)
        ctx.shape = x.shape
        return x[:, rows, slots]

    @staticmethod
    def backward(ctx, grad):
        rows, slots = ctx.saved_tensors
        grad_x = grad.new_zeros(ctx.shape)
        grad_x[:, rows, slots] = grad
        return grad_x, None, None


class RegionMLP(nn.Module):
    """One axis of the hire module: cross-region shift, inner-region
    rearrangement into channels, a bottleneck MLP, and the way back.

    The parameters are those of the released network: ``fc1`` is a 1x1
    convolution over ``C * p`` channels, where channel ``c * p + i`` holds
    token ``g * p + i`` of region ``g`` along ``dim`` (2 for height, 3 for
    width), after rolling by ``shift`` and circular padding to a multiple of
    ``p``. The arithmetic is the same, in fewer passes over memory: the roll
    and the padding are one gather of tokens, the rearrangement and ``fc1``
    one convolution with a ``p``-long kernel of stride ``p`` (``fc1``'s
    weights, viewed), and ``fc2``'s output channels are reordered
    region-major, so that each token's channels come out contiguous. Along
    the width, its output then is a view of the tokens in padded order; along
    the height it takes one gather, which also undoes the roll.
    """

    views_weights = True  # see channels_last_weights

    def __init__(self, channels, region_size, shift, dim, norm_cfg):
        super().__init__()
        self.region_size = region_size
        self.shift = shift
        self.dim = dim
        self.fc1 = nn.Conv2d(channels * region_size, channels // 2, 1,
                             bias=False)
        self.norm = build_norm_layer(norm_cfg, channels // 2)[1]
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // 2, channels * region_size, 1)

    def forward(self, x):
        """Returns ``(y, roll)``: the branch's output is ``y`` rolled by
        ``-roll`` along ``dim`` (the weighted sum applies that roll for
        free)."""
        p, dim = self.region_size, self.dim
        B, C = x.shape[:2]
        size = x.shape[dim]
        groups = (size + p - 1) // p  # ceil; ONNX divides towards zero
        # Under export the sizes are symbolic: every branch taken must hold
        # for all of them, so the gathers always run (and the width branch
        # undoes its roll too) and the modulus is a tensor's.
        exporting = torch.compiler.is_exporting()
        positions = torch.arange(groups * p, device=x.device)
        modulus = positions.new_full((), size)
        if exporting or self.shift or groups * p != size:
            # Padded position j holds position (j - shift) mod size.
            x = maps(tokens(x).index_select(
                dim - 1, torch.remainder(positions - self.shift, modulus)))
        kernel = (p, 1) if dim == 2 else (1, p)
        weight = self.fc1.weight.view(-1, C, *kernel)
        if isinstance(self.norm, nn.Identity):  # deploy form: BN folded
            x = conv_act(x, weight, self.fc1.bias, 'relu', kernel)
        else:
            x = self.act(self.norm(F.conv2d(x, weight, self.fc1.bias,
                                            stride=kernel)))
        weight = self.fc2.weight.view(C, p, -1).transpose(0, 1)
        bias = self.fc2.bias.view(C, p).t()
        x = tokens(F.conv2d(x, weight.reshape(C * p, -1, 1, 1),
                            bias.reshape(-1)))
        if dim == 3:  # (B, H, G, p * C) -> (B, H, G * p, C)
            x = x.reshape(B, x.shape[1], groups * p, C)
            if not exporting:  # cropped, the roll left to the sum
                return maps(x[:, :, :size]), self.shift
        # Position j comes from padded position (j + shift) mod size.
        source = torch.remainder(positions[:size] + self.shift, modulus)
        if dim == 3:
            return maps(x.index_select(2, source)), 0
        # That is token (that % p) of region (that // p); (B, G, W, p, C)
        # -> (B, H, W, C).
        x = x.reshape(B, groups, x.shape[2], p, C).transpose(2, 3)
        return maps(_TokenGather.apply(x, source // p, source % p)), 0


def _addcmul_rolled(out, y, weight, roll, dim):
    """``out += y.roll(-roll, dim) * weight``, in place, without
    materialising the roll."""
    size = out.shape[dim]
    roll %= size
    if not roll:
        return out.addcmul_(y, weight)
    out.narrow(dim, 0, size - roll).addcmul_(
        y.narrow(dim, roll, size - roll), weight)
    out.narrow(dim, size - roll, roll).addcmul_(y.narrow(dim, 0, roll),
                                                weight)
    return out


class HireModule(nn.Module):
    """Height, width and channel branches fused by split attention."""

    def __init__(self, channels, region_size, shift, norm_cfg):
        super().__init__()
        self.branch_h = RegionMLP(channels, region_size, shift, 2, norm_cfg)
        self.branch_w = RegionMLP(channels, region_size, shift, 3, norm_cfg)
        self.fc_c = nn.Conv2d(channels, channels, 1)
        self.reweight = VectorMLP(channels, channels // 4, channels * 3)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        return self.proj(self.weighted_sum(*self.attend(x)))

    def attend(self, x):
        """The three branches and their attention weights, (B, C, 3, 1, 1)."""
        branches = self.branch_h(x), self.branch_w(x), (self.fc_c(x), 0)
        B, C = x.shape[:2]
        # The mean of h + w + c, without materialising the sum (a mean is
        # blind to rolls).
        a = sum(spatial_mean(y) for y, _ in branches)
        # Softmax over the branches of each channel (channel c * 3 + j of
        # the reweighting MLP is branch j).
        a = self.reweight(a).view(B, C, 3).softmax(dim=2)
        return branches, a.view(B, C, 3, 1, 1)

    @staticmethod
    def weighted_sum(branches, a, images=slice(None), rows=slice(None)):
        """The attention-weighted sum of the branches (before ``proj``),
        for some images and rows (the height branch comes rolled back
        already, so row tiles need no wrap-around)."""
        (h, _), (w, w_roll), (c, _) = branches
        a = a[images].to(c.dtype)  # autocast may give softmax float32
        x = c[images, :, rows] * a[:, :, 2]
        x.addcmul_(h[images, :, rows], a[:, :, 0])
        return _addcmul_rolled(x, w[images, :, rows], a[:, :, 1], w_roll, 3)


class HireBlock(ResidualBlock):
    """Pre-norm residual block: hire module, then a 4x channel MLP."""

    # In inference, a block whose FFN hidden map would take more bytes than
    # this runs everything after the branches on tiles of about TILE_TOKENS
    # tokens: a hidden tile stays in cache, whereas glibc maps memory of 32
    # MiB and more fresh from the OS (page faults) on every allocation.
    TILE_ABOVE = 2**25
    TILE_TOKENS = 4096

    def __init__(self, channels, region_size, shift, drop_path, norm_cfg,
                 mlp_ratio=4):
        super().__init__()
        self.norm1 = build_norm_layer(norm_cfg, channels)[1]
        self.hire = HireModule(channels, region_size, shift, norm_cfg)
        self.norm2 = build_norm_layer(norm_cfg, channels)[1]
        self.ffn = PointwiseMLP(channels, channels * mlp_ratio, channels)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x):
        branches, a = self.hire.attend(self.norm1(x))
        if self._in_tiles(x):
            return self._forward_tiled(x, branches, a)
        x = self.residual(self.hire.weighted_sum(branches, a), self.hire.proj,
                          x)
        return self.residual(self._ffn_hidden(x), self.ffn.fc2, x)

    def _in_tiles(self, x):
        hidden_bytes = (x.numel() // x.shape[1] * self.ffn.fc1.out_channels
                        * x.element_size())
        return (not self.training and fusable(x) and _per_token(self.norm2)
                and hidden_bytes > self.TILE_ABOVE)

    def _forward_tiled(self, x, branches, a):
        """The block after its branches, image by image and rows by rows."""
        out = torch.empty_like(x)
        rows = max(1, self.TILE_TOKENS // x.shape[3])
        for image in range(x.shape[0]):
            for row in range(0, x.shape[2], rows):
                tile = slice(image, image + 1), slice(row, row + rows)
                y = self.residual(self.hire.weighted_sum(branches, a, *tile),
                                  self.hire.proj, x[tile[0], :, tile[1]])
                out[tile[0], :, tile[1]] = self.residual(
                    self._ffn_hidden(y), self.ffn.fc2, y)
        return out

    def _ffn_hidden(self, x):
        fc1 = self.ffn.fc1
        return conv_act(self.norm2(x), fc1.weight, fc1.bias, 'gelu')


@register_backbone
class HireMLP(DenseBackbone):
    """Hire-MLP backbone emitting feature maps at strides 4, 8, 16 and 32.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'`` or ``'large'``
            (Table A-1 of the supplement), or a dict with the keys
            ``depths``, ``channels``, ``region_sizes``, ``shift_sizes`` and
            ``shift_periods``, each giving one value per stage. Block ``j`` of
            a stage shifts by ``(j % shift_period) * shift_size`` tokens.
        in_channels (int): Input image channels. Defaults to 3.
        out_indices (Sequence[int]): Stages (0..3) whose outputs are returned.
        drop_path_rate (float): Stochastic depth rate of the last block; it
            rises linearly from 0 over all blocks.
        norm_cfg (dict): Every norm layer, e.g. ``dict(type='SyncBN')``.
        out_norm (bool): Add a freshly initialised norm layer to each output,
            as dense-prediction versions of the network do.
        frozen_stages (int): -1 freezes nothing, 0 the stem, k the stem and
            stages 1..k with their downsampling layers.
        norm_eval (bool): Keep every norm layer in eval mode while training.
        with_cp (bool): Gradient checkpointing per block.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=PATH)``
            loads a released ImageNet checkpoint, a bare state dict or an
            mmhire/mmdet/mmseg checkpoint; add ``use_ema=True`` to take a
            released file's EMA weights.
    """

    channels_last = True
    paper_name = 'Hire-MLP'
    arch_keys = ARCH_KEYS
    arch_zoo = {
        'tiny': dict(depths=(2, 2, 4, 2), channels=(64, 128, 320, 512),
                     **_STANDARD),
        'small': dict(depths=(3, 4, 10, 3), channels=(64, 128, 320, 512),
                      **_STANDARD),
        'base': dict(depths=(4, 6, 24, 3), channels=(64, 128, 320, 512),
                     **_STANDARD),
        'large': dict(depths=(4, 6, 24, 3), channels=(96, 192, 384, 768),
                      **_STANDARD),
    }

    def __init__(self,
                 arch='small',
                 in_channels=3,
                 out_indices=(0, 1, 2, 3),
                 drop_path_rate=0.,
                 norm_cfg=dict(type='BN', requires_grad=True),
                 out_norm=True,
                 frozen_stages=-1,
                 norm_eval=False,
                 with_cp=False,
                 init_cfg=None):
        super().__init__(arch, in_channels, out_indices, frozen_stages,
                         norm_eval, with_cp, init_cfg)
        channels = self.arch['channels']
        self.stem = ConvNormAct(in_channels, channels[0], 7, 4, 2, norm_cfg,
                                bias=True)
        self.downsamples = nn.ModuleList(
            ConvNormAct(channels[i], channels[i + 1], 3, 2, 1, norm_cfg,
                        bias=True)
            for i in range(self.num_stages - 1))

        rates = self.drop_path_rates(drop_path_rate, self.arch['depths'])
        self.stages = nn.ModuleList()
        for i in range(self.num_stages):
            shift, period = (self.arch['shift_sizes'][i],
                             self.arch['shift_periods'][i])
            self.stages.append(nn.Sequential(*(
                HireBlock(channels[i], self.arch['region_sizes'][i],
                          (j % period) * shift, rate, norm_cfg)
                for j, rate in enumerate(rates[i]))))

        if out_norm:
            self.add_out_norms(norm_cfg)
        self.finish_building()

    @classmethod
    def check_arch(cls, arch):
        for key in ARCH_KEYS:
            cls.require_ints(arch, key, cls.num_outs,
                             0 if key == 'shift_sizes' else 1)
        if min(arch['channels']) < 4:
            raise ArchError('HireMLP: arch channels must be at least 4 (the '
                            f'reweighting MLP uses channels // 4), got '
                            f'{arch["channels"]}.')

    def size_steps(self):
        return [[self.stem.conv], *([d.conv] for d in self.downsamples)]

    def fits(self, sizes):
        # Circular padding can add at most as many tokens as there are.
        return min(sizes) > 0 and all(
            (p - n % p) % p <= n
            for n, p in zip(sizes, self.arch['region_sizes']))

    def forward(self, x):
        self.check_input(x)
        # Channels-last memory throughout: its 1x1 convolutions run two to
        # three times faster on CPU than on NCHW; the outputs are plain NCHW.
        x = x.contiguous(memory_format=torch.channels_last)
        return self.run_pyramid(x, self.stem, self.downsamples)

    def frozen_modules(self):
        return self.frozen_pyramid(self.stem, self.downsamples)

    def folded_norms(self):
        """Every BatchNorm inside the network: the stem's and the
        downsampling layers' fold into their convolutions, each block's
        first norm into the three branch projections it feeds, the branch
        norms into the layer before them and the second norm into the
        channel MLP. The per-output norms stay (nothing here follows
        them)."""
        return [layer.bn for layer in (self.stem, *self.downsamples)] + [
            norm for b in self.stage_blocks() for norm in (
                b.norm1, b.norm2, b.hire.branch_h.norm, b.hire.branch_w.norm)]

    def fold(self):
        for layer in (self.stem, *self.downsamples):
            layer.fold()
        for block in self.stage_blocks():
            hire = block.hire
            for conv in (hire.branch_h.fc1, hire.branch_w.fc1, hire.fc_c):
                fold_bn_before(conv, block.norm1)
            for branch in (hire.branch_h, hire.branch_w):
                fold_bn_after(branch.fc1, branch.norm)
                branch.norm = nn.Identity()
            fold_bn_before(block.ffn.fc1, block.norm2)
            block.norm1 = block.norm2 = nn.Identity()

    def init_from_scratch(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                trunc_normal_init(m, std=.02, bias=0.)

    # The authors' checkpoints: names, and the arch a state dict holds.

    @classmethod
    def from_released(cls, state_dict):
        return released_to_mmhire(state_dict, _BLOCK_RENAMES)

    @classmethod
    def arch_of(cls, state_dict):
        """Depths and channels of the Hire-MLP whose tensors (in mmhire's
        names) these are; empty for anything else."""
        block = r'stages\.(\d)\.(\d+)\.hire\.'
        depths, _ = cls.per_stage(state_dict, block + r'branch_h\.fc1\.weight',
                                  len)
        _, channels = cls.per_stage(state_dict, block + r'fc_c\.weight',
                                    len)
        return dict(depths=depths, channels=channels) if any(depths) else {}


_BLOCK_RENAMES = (
    ('attn.mlp_h1_norm.', 'hire.branch_h.norm.'),
    ('attn.mlp_h1.', 'hire.branch_h.fc1.'),
    ('attn.mlp_h2.', 'hire.branch_h.fc2.'),
    ('attn.mlp_w1_norm.', 'hire.branch_w.norm.'),
    ('attn.mlp_w1.', 'hire.branch_w.fc1.'),
    ('attn.mlp_w2.', 'hire.branch_w.fc2.'),
    ('attn.mlp_c.', 'hire.fc_c.'),
    ('attn.', 'hire.'),
    ('mlp.', 'ffn.'),
)
