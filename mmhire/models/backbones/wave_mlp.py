"""Wave-MLP (Tang et al., "An Image Patch is a Wave: Phase-Aware Vision MLP",
CVPR 2022) as a four-level backbone for dense tasks.

The network is the one behind the authors' released ImageNet checkpoints
(``docs/wave_mlp.md``), with their block-internal names. Its phase-aware
token mixing (PATM) groups the phase branches as the released weights were
trained: output channel ``g`` of ``tfc_h`` reads the cosine parts of
channels ``2g`` and ``2g + 1`` for ``g < C/2`` and their sine parts after
that, not the cosine and sine of one channel. Each map goes through a norm
of the variant's kind, as in the authors' dense path, where that path
itself never loaded weights.
"""
import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model.weight_init import trunc_normal_init

from mmhire.errors import ArchError
from mmhire.models.fold import fold_bn_before
from mmhire.models.fused_ops import conv_act
from mmhire.models.layers import (ConvNormAct, PointwiseMLP, ResidualBlock,
                                  VectorMLP, fold_conv_norm, spatial_mean)
from mmhire.models.registry import register_backbone
from .base import DenseBackbone
from .flat_network_names import released_to_mmhire

GROUP_NORM = dict(type='GN', num_groups=1)  # statistics over C, H, W


class PATM(nn.Module):
    """Phase-aware token mixing: the height and width branches are
    amplitude (``fc_h``, ``fc_w``) times cosine and sine of a phase
    (``theta_*_conv``: conv, BatchNorm, ReLU), mixed by a 1x7 / 7x1 grouped
    convolution (``tfc_h``, ``tfc_w``); a channel branch ``fc_c``; split
    attention over the three, then ``proj`` (which the block runs, with its
    residual add)."""

    def __init__(self, channels, dw_theta, norm_cfg):
        super().__init__()
        self.fc_h = nn.Conv2d(channels, channels, 1, bias=False)
        self.fc_w = nn.Conv2d(channels, channels, 1, bias=False)
        self.fc_c = nn.Conv2d(channels, channels, 1, bias=False)
        self.tfc_h = nn.Conv2d(2 * channels, channels, (1, 7), 1, (0, 3),
                               groups=channels, bias=False)
        self.tfc_w = nn.Conv2d(2 * channels, channels, (7, 1), 1, (3, 0),
                               groups=channels, bias=False)
        self.reweight = VectorMLP(channels, channels // 4, channels * 3)
        self.proj = nn.Conv2d(channels, channels, 1)
        for name in ('theta_h_conv', 'theta_w_conv'):
            # conv, norm, ReLU, numbered as released
            layer = ConvNormAct(channels, channels, 3 if dw_theta else 1, 1,
                                1 if dw_theta else 0, norm_cfg,
                                bias=not dw_theta,
                                groups=channels if dw_theta else 1,
                                names=('0', '1', '2'))
            self.add_module(name, layer)
        self.dw_theta = dw_theta

    def norm_consumers(self):
        """The convolutions that read the block's normalised input and are
        1x1 (a norm before them folds into them)."""
        convs = [self.fc_h, self.fc_w, self.fc_c]
        if not self.dw_theta:
            convs += [self.theta_h_conv[0], self.theta_w_conv[0]]
        return convs

    def forward(self, x):
        return self.proj(self.weighted_sum(x))

    def weighted_sum(self, x):
        """The attention-weighted sum of the three branches (before
        ``proj``)."""
        h = self.tfc_h(_wave(self.fc_h(x), self.theta_h_conv(x)))
        w = self.tfc_w(_wave(self.fc_w(x), self.theta_w_conv(x)))
        c = self.fc_c(x)
        # The mean of h + w + c without materialising the sum; softmax over
        # the branches of each channel (channel c * 3 + j of the reweighting
        # MLP is branch j).
        a = spatial_mean(h) + spatial_mean(w) + spatial_mean(c)
        a = self.reweight(a).view(x.shape[0], -1, 3).softmax(dim=2)
        a = a[:, :, :, None, None].to(c.dtype)  # autocast: softmax float32
        return (h * a[:, :, 0]).addcmul_(w, a[:, :, 1]).addcmul_(c,
                                                                 a[:, :, 2])


def _wave(amplitude, phase):
    """``cat(amplitude * cos(phase), amplitude * sin(phase))``."""
    return torch.cat([amplitude * phase.cos(), amplitude * phase.sin()],
                     dim=1)


class WaveBlock(ResidualBlock):
    """``x + PATM(norm(x))``, then ``x + MLP(norm(x))``. In inference the
    last convolution of each residual branch adds the residual in its
    kernel, and the MLP's first convolution applies the GELU in its."""

    def __init__(self, channels, mlp_ratio, drop_path, norm_cfg,
                 theta_norm_cfg, dw_theta):
        super().__init__()
        self.norm1 = build_norm_layer(norm_cfg, channels)[1]
        self.attn = PATM(channels, dw_theta, theta_norm_cfg)
        self.norm2 = build_norm_layer(norm_cfg, channels)[1]
        self.mlp = PointwiseMLP(channels, int(channels * mlp_ratio), channels)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x):
        x = self.residual(self.attn.weighted_sum(self.norm1(x)),
                          self.attn.proj, x)
        fc1 = self.mlp.fc1
        hidden = conv_act(self.norm2(x), fc1.weight, fc1.bias, 'gelu')
        return self.residual(hidden, self.mlp.fc2, x)


_ARCH = dict(depths=(2, 2, 4, 2), channels=(64, 128, 320, 512),
             mlp_ratios=(4, 4, 4, 4), group_norm=False, dw_theta=False,
             embed_norm=True)


@register_backbone
class WaveMLP(DenseBackbone):
    """Wave-MLP backbone emitting the four stage maps at strides 4, 8, 16
    and 32, each through a norm of the variant's kind.

    Args:
        arch (str | dict): ``'T-dw'``, ``'T'``, ``'S'``, ``'M'`` or ``'B'``
            (any case; ``'T_dw'`` too), or a dict with the keys ``depths``,
            ``channels`` and ``mlp_ratios`` (one value per stage),
            ``group_norm`` (GroupNorm(1, C) for the block, stem and output
            norms, as S, M and B; else BatchNorm), ``dw_theta`` (the phase
            convolutions 3x3 depthwise, as T-dw; else 1x1) and
            ``embed_norm`` (a norm after the stem and each downsampler; M
            and B have none).
        in_channels (int): Input image channels. Defaults to 3.
        out_indices (Sequence[int]): Stages (0..3) whose maps are returned.
        drop_path_rate (float): Stochastic depth rate of the last block,
            rising linearly from 0 over all blocks.
        norm_cfg (dict): The BatchNorm layers: the phase convolutions' (in
            every variant) and, in T and T-dw, every other norm, e.g.
            ``dict(type='SyncBN')``. The GroupNorm variants keep GroupNorm.
        out_norm (bool): A fresh norm of the variant's kind on each map, as
            the authors' dense path has.
        norm_first_map (bool): Whether the stride-4 map gets its norm too
            (the authors turn it off with their ``FORK_LAST3`` environment
            variable).
        frozen_stages (int): -1 freezes nothing, 0 the stem, k the stem and
            stages 1..k with their downsamplers.
        norm_eval (bool): Keep every BatchNorm in eval mode while training.
        with_cp (bool): Gradient checkpointing per block.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=PATH)``
            loads a released file (``WaveMLP_T.pth.tar``...: a bare state
            dict, ``state_dict``, or the whole timm training file; add
            ``use_ema=True`` for its ``state_dict_ema``) or an
            mmhire/mmdet/mmseg checkpoint.
    """

    channels_last = True
    paper_name = 'Wave-MLP'
    arch_keys = tuple(_ARCH)
    arch_zoo = {
        't-dw': dict(_ARCH, dw_theta=True),
        't': _ARCH,
        's': dict(_ARCH, depths=(2, 3, 10, 3), group_norm=True),
        'm': dict(_ARCH, depths=(3, 4, 18, 3), mlp_ratios=(8, 8, 4, 4),
                  group_norm=True, embed_norm=False),
        'b': dict(_ARCH, depths=(2, 2, 18, 2), channels=(96, 192, 384, 768),
                  group_norm=True, embed_norm=False),
    }

    def __init__(self,
                 arch='T',
                 in_channels=3,
                 out_indices=(0, 1, 2, 3),
                 drop_path_rate=0.,
                 norm_cfg=dict(type='BN', requires_grad=True),
                 out_norm=True,
                 norm_first_map=True,
                 frozen_stages=-1,
                 norm_eval=False,
                 with_cp=False,
                 init_cfg=None):
        super().__init__(arch, in_channels, out_indices, frozen_stages,
                         norm_eval, with_cp, init_cfg)
        channels = self.arch['channels']
        block_norm = GROUP_NORM if self.arch['group_norm'] else norm_cfg
        embed_norm = block_norm if self.arch['embed_norm'] else None
        self.stem = ConvNormAct(in_channels, channels[0], 7, 4, 2,
                                embed_norm, bias=True, act=False)
        self.downsamples = nn.ModuleList(
            ConvNormAct(channels[i], channels[i + 1], 3, 2, 1, embed_norm,
                        bias=True, act=False)
            for i in range(self.num_stages - 1))
        rates = self.drop_path_rates(drop_path_rate, self.arch['depths'])
        self.stages = nn.ModuleList(
            nn.Sequential(*(
                WaveBlock(channels[i], self.arch['mlp_ratios'][i], rate,
                          block_norm, norm_cfg, self.arch['dw_theta'])
                for rate in rates[i]))
            for i in range(self.num_stages))
        if out_norm:
            self.add_out_norms(block_norm,
                               skip=() if norm_first_map else (0, ))
        self.finish_building()

    @classmethod
    def parse_arch(cls, arch):
        return super().parse_arch(arch.replace('_', '-')
                                  if isinstance(arch, str) else arch)

    @classmethod
    def check_arch(cls, arch):
        for key in ('depths', 'channels'):
            cls.require_ints(arch, key, cls.num_outs, 1)
        ratios = arch['mlp_ratios']
        if not (isinstance(ratios, tuple) and len(ratios) == cls.num_outs
                and all(isinstance(r, (int, float)) and r > 0
                        for r in ratios)):
            raise ArchError(f"WaveMLP: arch['mlp_ratios'] must be 4 positive "
                            f'numbers, got {ratios!r}.')
        if min(arch['channels']) < 4:
            raise ArchError('WaveMLP: arch channels must be at least 4 (the '
                            'reweighting MLP uses channels // 4), got '
                            f'{arch["channels"]}.')
        for key in ('group_norm', 'dw_theta', 'embed_norm'):
            if not isinstance(arch[key], bool):
                raise ArchError(f'WaveMLP: arch[{key!r}] must be True or '
                                f'False, got {arch[key]!r}.')

    def size_steps(self):
        return [[self.stem.conv], *([d.conv] for d in self.downsamples)]

    def forward(self, x):
        self.check_input(x)
        # Channels-last memory throughout, where the 1x1 convolutions run
        # two to three times faster on CPU; the outputs are plain NCHW.
        x = x.contiguous(memory_format=torch.channels_last)
        return self.run_pyramid(x, self.stem, self.downsamples)

    def frozen_modules(self):
        return self.frozen_pyramid(self.stem, self.downsamples)

    def _folded_block_norms(self, block):
        """The norms of ``block`` that fold exactly: its phase convolutions'
        BatchNorms, and, in the BatchNorm variants, ``norm2`` into the MLP
        and ``norm1`` into the 1x1 convolutions it feeds (not into a
        zero-padded depthwise phase convolution)."""
        attn = block.attn
        norms = {'theta_h': attn.theta_h_conv[1],
                 'theta_w': attn.theta_w_conv[1]}
        if not self.arch['group_norm']:
            norms['norm2'] = block.norm2
            if not self.arch['dw_theta']:
                norms['norm1'] = block.norm1
        return norms

    def folded_norms(self):
        embeds = ([layer.bn for layer in (self.stem, *self.downsamples)]
                  if self.arch['embed_norm'] and not self.arch['group_norm']
                  else [])
        return embeds + [norm for block in self.stage_blocks()
                         for norm in self._folded_block_norms(block).values()]

    def fold(self):
        if self.arch['embed_norm'] and not self.arch['group_norm']:
            for layer in (self.stem, *self.downsamples):
                layer.fold()
        for block in self.stage_blocks():
            norms, attn = self._folded_block_norms(block), block.attn
            if 'norm1' in norms:
                for conv in attn.norm_consumers():
                    fold_bn_before(conv, block.norm1)
                block.norm1 = nn.Identity()
            for layer in (attn.theta_h_conv, attn.theta_w_conv):
                fold_conv_norm(layer, '0', '1')
            if 'norm2' in norms:
                fold_bn_before(block.mlp.fc1, block.norm2)
                block.norm2 = nn.Identity()

    def init_from_scratch(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                trunc_normal_init(m, std=.02, bias=0.)

    # The authors' checkpoints: a stem, a flat list of stages and
    # downsamplers, the classifier's norm and head.

    @classmethod
    def from_released(cls, state_dict):
        return released_to_mmhire(state_dict)

    @classmethod
    def arch_of(cls, state_dict):
        """The arch of the Wave-MLP whose tensors (in mmhire's names) these
        are; empty for anything else."""
        block = r'stages\.(\d)\.(\d+)\.'
        depths, channels = cls.per_stage(
            state_dict, block + r'attn\.tfc_h\.weight', len)
        if not any(depths):
            return {}
        _, hidden = cls.per_stage(state_dict, block + r'mlp\.fc1\.weight',
                                  len)
        theta = state_dict.get('stages.0.0.attn.theta_h_conv.0.weight')
        return dict(
            depths=depths, channels=channels,
            mlp_ratios=tuple(h / c if c else 0
                             for h, c in zip(hidden, channels)),
            group_norm='stages.0.0.norm2.weight' in state_dict and
            'stages.0.0.norm2.running_mean' not in state_dict,
            dw_theta=theta is not None and theta.shape[-1] == 3,
            embed_norm='stem.bn.weight' in state_dict)
