"""Hire-MLP (Guo et al., CVPR 2022) as a four-level backbone for dense tasks.

The network is the one behind the authors' released ImageNet checkpoints
(see ``HIRE_MLP_ARCHITECTURE.md``), not the simplified Algorithm A-1 of the
supplement: each hire module has a bottleneck MLP per axis and fuses its
three branches with split attention.
"""
from collections import OrderedDict
from contextlib import contextmanager, nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_init
from torch.nn.modules.batchnorm import _BatchNorm

from mmhire.errors import ArchError, InputError

ARCH_KEYS = ('depths', 'channels', 'region_sizes', 'shift_sizes',
             'shift_periods')
_STANDARD = dict(region_sizes=(4, 3, 3, 2), shift_sizes=(2, 2, 1, 1),
                 shift_periods=(2, 2, 3, 2))


class ConvNormReLU(nn.Sequential):
    """The stem and the downsampling layers: conv (with bias), norm, ReLU."""

    def __init__(self, in_channels, out_channels, kernel_size, stride,
                 padding, norm_cfg):
        super().__init__(OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                           padding),
            bn=build_norm_layer(norm_cfg, out_channels)[1],
            act=nn.ReLU(inplace=True)))


class ConvMLP(nn.Module):
    """Two 1x1 convolutions with a GELU between them."""

    def __init__(self, in_channels, hidden_channels, out_channels):
        super().__init__()
        self.fc1 = nn.Conv2d(in_channels, hidden_channels, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_channels, out_channels, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class RegionMLP(nn.Module):
    """One axis of the hire module: cross-region shift, inner-region
    rearrangement into channels, a bottleneck MLP, and the way back.

    Along ``dim`` (2 for height, 3 for width) the map is rolled by ``shift``,
    circularly padded to a multiple of ``region_size`` and each run of
    ``region_size`` tokens is folded into channels (channel ``c * p + i``
    holds token ``g * p + i``), so a 1x1 convolution mixes a whole region.
    """

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
        p, dim = self.region_size, self.dim
        size = x.shape[dim]
        if self.shift:
            x = torch.roll(x, self.shift, dims=dim)
        pad = (p - size % p) % p
        if pad:
            x = F.pad(x, (0, pad, 0, 0) if dim == 3 else (0, 0, 0, pad),
                      mode='circular')
        x = self.fc2(self.act(self.norm(self.fc1(self._fold(x)))))
        x = self._unfold(x)
        if pad:
            x = x.narrow(dim, 0, size)
        if self.shift:
            x = torch.roll(x, -self.shift, dims=dim)
        return x

    def _fold(self, x):
        B, C, H, W = x.shape
        p = self.region_size
        if self.dim == 2:
            x = x.reshape(B, C, H // p, p, W).transpose(2, 3)
            return x.reshape(B, C * p, H // p, W)
        x = x.reshape(B, C, H, W // p, p).permute(0, 1, 4, 2, 3)
        return x.reshape(B, C * p, H, W // p)

    def _unfold(self, x):
        B, Cp, H, W = x.shape
        p = self.region_size
        C = Cp // p
        if self.dim == 2:
            x = x.reshape(B, C, p, H, W).transpose(2, 3)
            return x.reshape(B, C, H * p, W)
        x = x.reshape(B, C, p, H, W).permute(0, 1, 3, 4, 2)
        return x.reshape(B, C, H, W * p)


class HireModule(nn.Module):
    """Height, width and channel branches fused by split attention."""

    def __init__(self, channels, region_size, shift, norm_cfg):
        super().__init__()
        self.branch_h = RegionMLP(channels, region_size, shift, 2, norm_cfg)
        self.branch_w = RegionMLP(channels, region_size, shift, 3, norm_cfg)
        self.fc_c = nn.Conv2d(channels, channels, 1)
        self.reweight = ConvMLP(channels, channels // 4, channels * 3)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        h, w, c = self.branch_h(x), self.branch_w(x), self.fc_c(x)
        B, C = x.shape[:2]
        a = (h + w + c).flatten(2).mean(2)[:, :, None, None]
        # Softmax over the branches of each channel (channel c * 3 + j holds
        # branch j), taken along a leading dim as the released code does.
        a = self.reweight(a).reshape(B, C, 3).permute(2, 0, 1).softmax(dim=0)
        a = a[:, :, :, None, None]
        x = h * a[0] + w * a[1] + c * a[2]
        return self.proj(x)


class HireBlock(nn.Module):
    """Pre-norm residual block: hire module, then a 4x channel MLP."""

    def __init__(self, channels, region_size, shift, drop_path, norm_cfg,
                 mlp_ratio=4):
        super().__init__()
        self.norm1 = build_norm_layer(norm_cfg, channels)[1]
        self.hire = HireModule(channels, region_size, shift, norm_cfg)
        self.norm2 = build_norm_layer(norm_cfg, channels)[1]
        self.ffn = ConvMLP(channels, channels * mlp_ratio, channels)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x):
        x = x + self.drop_path(self.hire(self.norm1(x)))
        return x + self.drop_path(self.ffn(self.norm2(x)))


@contextmanager
def _scratch_bn_statistics(module):
    """While a checkpointed block is recomputed, let its BatchNorm layers
    update throwaway copies of their running statistics, so that ``with_cp``
    updates them once per step, exactly as without it. The recomputation
    itself is unchanged: it uses the batch statistics either way."""
    names = ('running_mean', 'running_var', 'num_batches_tracked')
    norms = [m for m in module.modules()
             if isinstance(m, _BatchNorm) and m.track_running_stats]
    originals = [[getattr(m, n) for n in names] for m in norms]
    for m in norms:
        for n in names:
            setattr(m, n, getattr(m, n).clone())
    try:
        yield
    finally:
        for m, buffers in zip(norms, originals):
            for n, buffer in zip(names, buffers):
                setattr(m, n, buffer)


class HireMLP(BaseModule):
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
    num_stages = 4

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
        super().__init__(init_cfg=init_cfg)
        self.arch = self.parse_arch(arch)
        self.out_indices = self._check_out_indices(out_indices)
        if not -1 <= frozen_stages <= self.num_stages:
            raise ArchError(f'HireMLP: frozen_stages must be in -1..'
                             f'{self.num_stages}, got {frozen_stages}.')
        self.in_channels = in_channels
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp

        channels = self.arch['channels']
        self.stem = ConvNormReLU(in_channels, channels[0], 7, 4, 2, norm_cfg)
        self.downsamples = nn.ModuleList(
            ConvNormReLU(channels[i], channels[i + 1], 3, 2, 1, norm_cfg)
            for i in range(self.num_stages - 1))

        depths = self.arch['depths']
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            shift, period = (self.arch['shift_sizes'][i],
                             self.arch['shift_periods'][i])
            self.stages.append(nn.Sequential(*(
                HireBlock(channels[i], self.arch['region_sizes'][i],
                          (j % period) * shift, rates[sum(depths[:i]) + j],
                          norm_cfg)
                for j in range(depth))))

        for i in self.out_indices if out_norm else ():
            self.add_module(f'norm{i}',
                            build_norm_layer(norm_cfg, channels[i])[1])
        self.min_input_size = self._min_input_size()
        self._freeze_stages()

    @classmethod
    def parse_arch(cls, arch):
        """Resolve a name from ``arch_zoo`` or validate a custom dict."""
        if isinstance(arch, str):
            if arch not in cls.arch_zoo:
                raise ArchError(
                    f'HireMLP: unknown arch {arch!r}; choose one of '
                    f'{sorted(cls.arch_zoo)} or give a dict with the keys '
                    f'{list(ARCH_KEYS)}.')
            return {k: tuple(v) for k, v in cls.arch_zoo[arch].items()}
        if not isinstance(arch, dict) or set(arch) != set(ARCH_KEYS):
            got = sorted(arch) if isinstance(arch, dict) else type(arch)
            raise ArchError(
                f'HireMLP: a custom arch must be a dict with exactly the keys '
                f'{list(ARCH_KEYS)} (one int per stage each), got {got}; or '
                f'use one of the names {sorted(cls.arch_zoo)}.')
        for key in ARCH_KEYS:
            value = arch[key]
            lowest = 0 if key == 'shift_sizes' else 1
            if (not isinstance(value, (list, tuple))
                    or len(value) != cls.num_stages
                    or not all(isinstance(v, int) and v >= lowest
                               for v in value)):
                raise ArchError(
                    f'HireMLP: arch[{key!r}] must be {cls.num_stages} ints '
                    f'>= {lowest}, got {value!r}.')
        if min(arch['channels']) < 4:
            raise ArchError('HireMLP: arch channels must be at least 4 (the '
                             f'reweighting MLP uses channels // 4), got '
                             f'{arch["channels"]}.')
        return {k: tuple(arch[k]) for k in ARCH_KEYS}

    def _check_out_indices(self, out_indices):
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        out_indices = tuple(out_indices)
        if not out_indices or any(
                i not in range(self.num_stages) for i in out_indices):
            raise ArchError(f'HireMLP: out_indices must be a non-empty subset '
                             f'of 0..{self.num_stages - 1}, got {out_indices}.')
        return tuple(sorted(set(out_indices)))

    @staticmethod
    def stage_sizes(size):
        """Feature map side of each stage for an input side of ``size``."""
        sizes = [(size + 2 * 2 - 7) // 4 + 1]
        for _ in range(3):
            sizes.append((sizes[-1] + 2 - 3) // 2 + 1)
        return sizes

    def _fits(self, size):
        # Circular padding can add at most as many tokens as there are.
        return size >= 3 and all(
            (p - n % p) % p <= n
            for n, p in zip(self.stage_sizes(size), self.arch['region_sizes']))

    def _min_input_size(self):
        return next(s for s in range(1, 1024) if self._fits(s))

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InputError(
                f'HireMLP: expected an (N, {self.in_channels}, H, W) batch, '
                f'got shape {tuple(x.shape)}.')
        if min(x.shape[2:]) < self.min_input_size:
            raise InputError(
                f'HireMLP: a {x.shape[2]}x{x.shape[3]} input is too small for '
                f'this arch; images must be at least {self.min_input_size}x'
                f'{self.min_input_size} (pad or resize them).')
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            if i:
                x = self.downsamples[i - 1](x)
            x = self._run_stage(stage, x)
            if i in self.out_indices:
                norm = getattr(self, f'norm{i}', None)
                outs.append(norm(x) if norm is not None else x)
        return tuple(outs)

    def _run_stage(self, stage, x):
        if not (self.with_cp and x.requires_grad):
            return stage(x)
        for block in stage:
            x = cp.checkpoint(
                block, x, use_reentrant=False,
                context_fn=lambda b=block: (nullcontext(),
                                            _scratch_bn_statistics(b)))
        return x

    def frozen_modules(self):
        """The modules that ``frozen_stages`` freezes."""
        if self.frozen_stages < 0:
            return []
        modules = [self.stem]
        for i in range(self.frozen_stages):
            if i:
                modules.append(self.downsamples[i - 1])
            modules.append(self.stages[i])
            if hasattr(self, f'norm{i}'):
                modules.append(getattr(self, f'norm{i}'))
        return modules

    def _freeze_stages(self):
        for module in self.frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode=True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def init_weights(self):
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            if 'checkpoint' not in cfg:
                raise ArchError("HireMLP: init_cfg=dict(type='Pretrained') "
                                 'needs checkpoint=PATH.')
            from mmhire.checkpoint import load_pretrained
            load_pretrained(self, cfg['checkpoint'],
                            use_ema=cfg.get('use_ema', False))
        elif cfg is not None:
            super().init_weights()
        else:
            MMLogger.get_current_instance().info(
                'HireMLP: no pretrained weights given; training from scratch.')
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    trunc_normal_init(m, std=.02, bias=0.)
