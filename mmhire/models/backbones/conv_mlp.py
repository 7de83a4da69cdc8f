"""ConvMLP (Li et al., "ConvMLP: Hierarchical Convolutional MLPs for Vision")
as a four-level backbone for dense tasks.

The network is the one behind the authors' released ImageNet checkpoints
(``docs/conv_mlp.md``), under the same parameter names, and it
returns the four maps of the authors' detection and segmentation wrapper:
the tokenizer's output (stride 4), the conv stage's downsampled output
(stride 8), the first Conv-MLP stage's downsampled output (stride 16) and
the last stage's output (stride 32). The second Conv-MLP stage's own output
is not one of them.
"""
import re

import torch
import torch.nn as nn
from mmcv.cnn.bricks import DropPath
from mmengine.model.weight_init import constant_init, trunc_normal_init
from torch.nn.modules.batchnorm import _BatchNorm

from mmhire.errors import ArchError
from mmhire.models.fold import fold_affine_before
from mmhire.models.layers import (conv_norm_act, fold_conv_norm, maps,
                                  run_conv_norm_act, tokens)
from mmhire.models.registry import register_backbone
from .base import DenseBackbone


def _conv_norm_relu(in_channels, out_channels, kernel_size, stride, norm_cfg):
    """conv (no bias), norm, ReLU: three entries of an indexed Sequential, as
    the released names number them."""
    return conv_norm_act(in_channels, out_channels, kernel_size, stride,
                         kernel_size // 2, norm_cfg)


def _run_conv_norm_relu(seq, x, end):
    """The conv-norm-ReLU triples of ``seq[:end]``."""
    for i in range(0, end, 3):
        x = run_conv_norm_act(seq[i], seq[i + 1], seq[i + 2], x)
    return x


class Tokenizer(nn.Module):
    """Three 3x3 conv-norm-ReLU layers (the first of stride 2) and a stride-2
    max-pool: stride 4."""

    def __init__(self, in_channels, channels, norm_cfg):
        super().__init__()
        self.block = nn.Sequential(
            *_conv_norm_relu(in_channels, channels // 2, 3, 2, norm_cfg),
            *_conv_norm_relu(channels // 2, channels // 2, 3, 1, norm_cfg),
            *_conv_norm_relu(channels // 2, channels, 3, 1, norm_cfg),
            nn.MaxPool2d(3, 2, 1))

    def forward(self, x):
        return self.block[-1](_run_conv_norm_relu(self.block, x, 9))


class Bottleneck(nn.Sequential):
    """``x + relu(bn(conv1x1(relu(bn(conv3x3(relu(bn(conv1x1(x))))))))``: the
    last ReLU ends the branch, nothing follows the sum."""

    def __init__(self, channels, hidden_channels, norm_cfg):
        super().__init__(
            *_conv_norm_relu(channels, hidden_channels, 1, 1, norm_cfg),
            *_conv_norm_relu(hidden_channels, hidden_channels, 3, 1, norm_cfg),
            *_conv_norm_relu(hidden_channels, channels, 1, 1, norm_cfg))

    def forward(self, x):
        return x + _run_conv_norm_relu(self, x, len(self))


class ConvStage(nn.Module):
    """Bottlenecks at stride 4, then a biased stride-2 3x3 convolution (no
    norm, no activation) whose raw output is the stride-8 map. A container:
    the backbone runs it, block by block under ``with_cp``."""

    def __init__(self, channels, hidden_channels, num_blocks, norm_cfg):
        super().__init__()
        self.conv_blocks = nn.Sequential(*(
            Bottleneck(channels, hidden_channels, norm_cfg)
            for _ in range(num_blocks)))
        self.downsample = nn.Conv2d(channels, hidden_channels, 3, 2, 1)


class ChannelMLP(nn.Module):
    """Linear, GELU, linear, over the last (channel) axis."""

    def __init__(self, channels, hidden_channels):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden_channels)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_channels, channels)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class MLPBlock(nn.Module):
    """On (B, H, W, C) tokens: a residual channel MLP, then LayerNorm and a
    3x3 depthwise convolution that REPLACE the tokens (no residual around
    them, no bias), then another residual channel MLP. One drop-path module
    serves both residuals, with independent draws."""

    def __init__(self, channels, hidden_channels, drop_path):
        super().__init__()
        self.norm1 = nn.LayerNorm(channels)
        self.channel_mlp1 = ChannelMLP(channels, hidden_channels)
        self.norm2 = nn.LayerNorm(channels)
        self.connect = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels,
                                 bias=False)
        self.connect_norm = nn.LayerNorm(channels)
        self.channel_mlp2 = ChannelMLP(channels, hidden_channels)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x):
        x = x + self.drop_path(self.channel_mlp1(self.norm1(x)))
        x = tokens(self.connect(maps(self.connect_norm(x))))
        return x + self.drop_path(self.channel_mlp2(self.norm2(x)))


class TokenDownsample(nn.Module):
    """A biased stride-2 3x3 convolution on (B, H, W, C) tokens."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.downsample = nn.Conv2d(in_channels, out_channels, 3, 2, 1)

    def forward(self, x):
        return tokens(self.downsample(maps(x)))


class MLPStage(nn.Module):
    """Conv-MLP blocks, then (except in the last stage) a stride-2
    downsampling convolution. A container, as ``ConvStage``."""

    def __init__(self, channels, next_channels, hidden_channels, rates):
        super().__init__()
        self.blocks = nn.Sequential(*(
            MLPBlock(channels, hidden_channels, rate) for rate in rates))
        self.downsample_mlp = (TokenDownsample(channels, next_channels)
                               if next_channels else nn.Identity())


@register_backbone
class ConvMLP(DenseBackbone):
    """ConvMLP backbone emitting the authors' four maps at strides 4, 8, 16
    and 32 (64/128/256/512 channels for small and medium, 96/192/384/768
    for large).

    Args:
        arch (str | dict): ``'small'``, ``'medium'`` or ``'large'``, or a
            dict with the keys ``stem_channels`` (the tokenizer's output;
            its first two convolutions use half), ``conv_blocks`` (the
            bottlenecks of the conv stage), and one value per Conv-MLP stage
            of ``depths``, ``channels`` and ``mlp_ratios``.
        in_channels (int): Input image channels. Defaults to 3.
        out_indices (Sequence[int]): Which of the four maps (0..3) to return.
        drop_path_rate (float): Stochastic depth rate of the last block of
            each Conv-MLP stage; it rises linearly from 0 within each stage.
            The default 0.1 is the authors' schedule, hard-coded in their
            ImageNet and dense-prediction training; another value changes
            the rates of every stage in proportion.
        norm_cfg (dict): The BatchNorm layers of the tokenizer and the conv
            stage (the Conv-MLP blocks use LayerNorm), e.g.
            ``dict(type='SyncBN')``. The authors trained with plain BN.
        out_norm (bool): Add a freshly initialised ``norm_cfg`` norm to each
            output. Off by default: the authors' maps carry no norm.
        frozen_stages (int): -1 freezes nothing, 0 the tokenizer, k the
            tokenizer and the first k stages, counting the conv stage as the
            first and the three Conv-MLP stages as the second to fourth
            (each with its downsampling convolution).
        norm_eval (bool): Keep every BatchNorm in eval mode while training.
        with_cp (bool): Gradient checkpointing per block.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=PATH)``
            loads a released ImageNet file (``convmlp_{s,m,l}_imagenet.pth``,
            its classifier skipped), the authors' detection or segmentation
            files, or an mmhire/mmdet/mmseg checkpoint.
    """

    channels_last = True
    paper_name = 'ConvMLP'
    arch_keys = ('stem_channels', 'conv_blocks', 'depths', 'channels',
                 'mlp_ratios')
    arch_zoo = {
        'small': dict(stem_channels=64, conv_blocks=2, depths=(2, 4, 2),
                      channels=(128, 256, 512), mlp_ratios=(2, 2, 2)),
        'medium': dict(stem_channels=64, conv_blocks=3, depths=(3, 6, 3),
                       channels=(128, 256, 512), mlp_ratios=(3, 3, 3)),
        'large': dict(stem_channels=96, conv_blocks=3, depths=(4, 8, 3),
                      channels=(192, 384, 768), mlp_ratios=(3, 3, 3)),
    }

    def __init__(self,
                 arch='small',
                 in_channels=3,
                 out_indices=(0, 1, 2, 3),
                 drop_path_rate=0.1,
                 norm_cfg=dict(type='BN', requires_grad=True),
                 out_norm=False,
                 frozen_stages=-1,
                 norm_eval=False,
                 with_cp=False,
                 init_cfg=None):
        super().__init__(arch, in_channels, out_indices, frozen_stages,
                         norm_eval, with_cp, init_cfg)
        stem, channels = self.arch['stem_channels'], self.arch['channels']
        self.tokenizer = Tokenizer(in_channels, stem, norm_cfg)
        if self.num_stages > 1:
            self.conv_stages = ConvStage(stem, channels[0],
                                         self.arch['conv_blocks'], norm_cfg)
        # Map 2 is the first Conv-MLP stage's output, map 3 the third's.
        self.stages = nn.ModuleList(
            MLPStage(channels[i], channels[i + 1] if i < 2 else 0,
                     int(channels[i] * self.arch['mlp_ratios'][i]),
                     self.drop_path_rates(drop_path_rate, (depth, ))[0])
            for i, depth in enumerate(self.arch['depths'][:(
                0, 0, 1, 3)[self.num_stages - 1]]))
        if out_norm:
            self.add_out_norms(norm_cfg)
        self.finish_building()

    @property
    def map_channels(self):
        return (self.arch['stem_channels'], *self.arch['channels'])

    @classmethod
    def check_arch(cls, arch):
        cls.require_ints(arch, 'stem_channels', None, 2)
        cls.require_ints(arch, 'conv_blocks', None, 0)
        cls.require_ints(arch, 'depths', 3, 1)
        cls.require_ints(arch, 'channels', 3, 1)
        ratios = arch['mlp_ratios']
        if not (isinstance(ratios, tuple) and len(ratios) == 3 and all(
                isinstance(r, (int, float)) and r > 0 for r in ratios)):
            raise ArchError(f'ConvMLP: arch[\'mlp_ratios\'] must be 3 '
                            f'positive numbers, got {ratios!r}.')
        if arch['stem_channels'] % 2:
            raise ArchError('ConvMLP: arch stem_channels must be even (the '
                            'first tokenizer convolutions use half), got '
                            f'{arch["stem_channels"]}.')

    def _pyramid_stages(self):
        """The tokenizer, the conv stage and the Conv-MLP stages, as built."""
        return [self.tokenizer, *([self.conv_stages]
                                  if self.num_stages > 1 else []),
                *self.stages]

    def size_steps(self):
        downsamples = [self.conv_stages.downsample, *(
            stage.downsample_mlp.downsample for stage in self.stages[:2])
        ] if self.num_stages > 1 else []
        return [[m for m in self.tokenizer.block
                 if isinstance(m, (nn.Conv2d, nn.MaxPool2d))],
                *([d] for d in downsamples)]

    def forward(self, x):
        self.check_input(x)
        # Channels-last memory throughout, so that the Conv-MLP stages'
        # (B, H, W, C) tokens are free views of the maps.
        x = self.tokenizer(x.contiguous(memory_format=torch.channels_last))
        pyramid = [x]
        if self.num_stages > 1:
            x = self.run_blocks(self.conv_stages.conv_blocks, x)
            pyramid.append(self.conv_stages.downsample(x))
            x = tokens(pyramid[-1])
        for i, stage in enumerate(self.stages):
            x = stage.downsample_mlp(self.run_blocks(stage.blocks, x))
            if i != 1:  # the second stage's output is not one of the maps
                pyramid.append(maps(x))
        return tuple(self.output(i, pyramid[i]) for i in self.out_indices)

    def frozen_modules(self):
        modules = self._pyramid_stages()[:self.frozen_stages + 1]
        # The map of output i comes from stage (0, 1, 2, 4)[i].
        modules += [getattr(self, f'norm{i}') for i, stage in
                    enumerate((0, 1, 2, 4))
                    if stage <= self.frozen_stages
                    and hasattr(self, f'norm{i}')]
        return modules

    def _batch_norm_sequences(self):
        bottlenecks = self.conv_stages.conv_blocks if self.num_stages > 1 \
            else []
        return [self.tokenizer.block, *bottlenecks]

    def folded_norms(self):
        """Every BatchNorm, each into the convolution before it. The affine
        parts of each block's two pre-MLP LayerNorms fold too (into the
        MLP's first linear layer), and the LayerNorm before the depthwise
        convolution keeps its bias (the convolution pads with zeros, so a
        folded bias would be wrong at the borders); the per-output norms
        stay."""
        return [seq[i] for seq in self._batch_norm_sequences()
                for i in range(1, len(seq) - 1, 3)]

    def fold(self):
        for seq in self._batch_norm_sequences():
            for i in range(1, len(seq) - 1, 3):
                fold_conv_norm(seq, str(i - 1), str(i))
        for stage in self.stages:
            for block in stage.blocks:
                for name, mlp in (('norm1', block.channel_mlp1),
                                  ('norm2', block.channel_mlp2)):
                    norm = getattr(block, name)
                    fold_affine_before(mlp.fc1, norm.weight, norm.bias)
                    setattr(block, name, nn.LayerNorm(
                        norm.normalized_shape, norm.eps,
                        elementwise_affine=False))

    def init_from_scratch(self):
        """The authors' initialisation."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_init(m, std=.02, bias=0.)
            elif isinstance(m, nn.Conv2d):  # biases keep PyTorch's default
                nn.init.kaiming_normal_(m.weight, mode='fan_out',
                                        nonlinearity='relu')
            elif isinstance(m, (nn.LayerNorm, _BatchNorm)):
                constant_init(m, 1, bias=0.)

    # The authors' checkpoints use these names; their classifiers add a
    # final norm and head.

    @classmethod
    def from_released(cls, state_dict):
        if not any(k.startswith('tokenizer.block.') for k in state_dict):
            return state_dict, []
        return cls.split_off(state_dict, ('norm.', 'head.'))

    @classmethod
    def arch_of(cls, state_dict):
        """The arch of the ConvMLP whose tensors these are; empty for
        anything else."""
        if 'tokenizer.block.6.weight' not in state_dict:
            return {}
        block = r'stages\.(\d)\.blocks\.(\d+)\.'
        depths, channels = cls.per_stage(
            state_dict, block + r'connect\.weight',
            lambda weight: weight.shape[0], stages=3)
        _, hidden = cls.per_stage(
            state_dict, block + r'channel_mlp1\.fc1\.weight',
            lambda weight: weight.shape[0], stages=3)
        conv_blocks = sum(re.fullmatch(r'conv_stages\.conv_blocks\.\d+\.0\.'
                                       r'weight', key) is not None
                          for key in state_dict)
        return dict(stem_channels=state_dict['tokenizer.block.6.weight']
                    .shape[0], conv_blocks=conv_blocks, depths=depths,
                    channels=channels, mlp_ratios=tuple(
                        h / c if c else 0 for h, c in zip(hidden, channels)))
