"""RepMLPNet (Ding et al., "RepMLPNet: Hierarchical Vision MLP with
Re-parameterized Locality", CVPR 2022) as a four-level backbone for dense
tasks.

The network is the one behind the authors' released ImageNet checkpoints
(``docs/repmlp_net.md``), under the same parameter names, so
their files load as they are. Two things differ from their code, both only
where a map holds more than one FC patch (every detection and segmentation
size):

* the FC outputs go back where they came from. The authors' block restores
  its rows in a different order than it built them, which scrambles
  channels and patches whenever a map has several patches;
* a map that is not a multiple of the patch is zero-padded at the bottom and
  right inside each block and cropped back after it (the Global Perceptron
  averages the unpadded map), so any input size works and the deploy form
  stays equal to the training form.
"""
import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath

from mmhire.errors import ArchError, CheckpointError
from mmhire.models.fold import bn_affine
from mmhire.models.layers import ConvNormAct, spatial_mean
from mmhire.models.registry import register_backbone
from .base import DenseBackbone

LOCAL_KERNELS = (1, 3)  # the Local Perceptron's branches, as released
EMBED_KERNELS = (2, 3, 5)


class GlobalPerceptron(nn.Module):
    """A per-channel gate from the map's global mean: 1x1 conv to C/4, ReLU,
    1x1 conv back, sigmoid. It scales the block's output."""

    def __init__(self, channels, reduction=4):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x):
        x = spatial_mean(x)
        x = F.linear(x, self.fc1.weight.flatten(1), self.fc1.bias).relu()
        x = F.linear(x, self.fc2.weight.flatten(1), self.fc2.bias)
        return x.sigmoid()[:, :, None, None]


def _per_patch_conv(rows, weight):
    """The depthwise convolution (``weight``: (S, 1, k, k)) of each (p, p)
    patch image of (R, S, p, p) rows, zero-padded at the patch border.
    A k x k one runs with the R*S patch images as the channels of one image,
    where oneDNN is about ten times faster, forward and backward, than on a
    batch of R images of S channels; a 1x1 one is a product. Under export,
    where R is symbolic and ONNX wants a constant group count, it is the
    batch of R images."""
    r, s, height, width = rows.shape
    k = weight.shape[-1]
    weight = weight.to(rows.dtype)  # autocast does not cast a product
    if k == 1:
        return rows * weight.view(1, s, 1, 1)
    if torch.compiler.is_exporting():
        return F.conv2d(rows, weight, padding=k // 2, groups=s)
    out = F.conv2d(rows.reshape(1, r * s, height, width),
                   weight.repeat(r, 1, 1, 1), padding=k // 2, groups=r * s)
    return out.view(r, s, height, width)


class RepMLPBlock(nn.Module):
    """The block's token mixing on (N, C, H, W): each ``patch`` x ``patch``
    patch of each group of ``sharesets`` consecutive channels goes through
    a set-sharing FC (``fc3``, one matrix per share-set, channel ``c`` in
    set ``c % sharesets``) and, in the training form, per-patch depthwise
    1x1 and 3x3 convolutions (the Local Perceptron), each followed by a
    BatchNorm; the sum is gated by the Global Perceptron. The deploy form
    holds all of it in ``fc3`` (with a bias)."""

    def __init__(self, channels, patch, sharesets, norm_cfg, deploy=False):
        super().__init__()
        self.patch, self.sharesets = patch, sharesets
        area = patch * patch
        self.gp = GlobalPerceptron(channels)
        self.fc3 = nn.Conv2d(sharesets * area, sharesets * area, 1,
                             groups=sharesets, bias=deploy)
        if deploy:
            self.fc3_bn = nn.Identity()
        else:
            self.fc3_bn = build_norm_layer(norm_cfg, sharesets)[1]
            for k in LOCAL_KERNELS:
                self.add_module(f'repconv{k}', ConvNormAct(
                    sharesets, sharesets, k, 1, k // 2, norm_cfg,
                    groups=sharesets, act=False))

    @property
    def local_branches(self):
        return [getattr(self, f'repconv{k}') for k in LOCAL_KERNELS
                if hasattr(self, f'repconv{k}')]

    def forward(self, x):
        gate = self.gp(x)
        n, c, height, width = x.shape
        p, s = self.patch, self.sharesets
        # Patches per column and row, and the padding that completes them
        # (a ceiling division: simpler for the exporter than a modulus).
        hp, wp = (height + p - 1) // p, (width + p - 1) // p
        pad_h, pad_w = hp * p - height, wp * p - width
        # Under export the sizes are symbolic: always pad (maybe by 0).
        padded = torch.compiler.is_exporting() or pad_h or pad_w
        if padded:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        # One row per (sample, patch, channel group): its s share-sets' p*p
        # patch values.
        rows = (x.reshape(n, c // s, s, hp, p, wp, p)
                .permute(0, 3, 5, 1, 2, 4, 6).reshape(-1, s, p, p))
        out = self.fc3_bn(self.channel_fc(rows))
        for branch in self.local_branches:
            out = out + branch.bn(_per_patch_conv(rows, branch.conv.weight))
        # The exact inverse of the partition above.
        out = (out.reshape(n, hp, wp, c // s, s, p, p)
               .permute(0, 3, 4, 1, 5, 2, 6)
               .reshape(n, c, hp * p, wp * p))
        if padded:
            out = out[:, :, :height, :width]
        return out * gate

    def channel_fc(self, rows):
        """``fc3`` on (R, S, p, p) rows, as S batched matrix products (the
        grouped 1x1 convolution of the released code, without its slow
        path)."""
        r, s = rows.shape[:2]
        area = self.patch * self.patch
        weight = self.fc3.weight.view(s, area, area)
        out = torch.bmm(rows.reshape(r, s, area).transpose(0, 1),
                        weight.transpose(1, 2))
        if self.fc3.bias is not None:
            out = out + self.fc3.bias.view(s, 1, area).to(out.dtype)
        return out.transpose(0, 1).reshape(r, s, self.patch, self.patch)

    @torch.no_grad()
    def local_inject(self):
        """Locality Injection: fold ``fc3_bn`` into ``fc3``, fold each
        local branch's BatchNorm into its kernel, merge the kernels into one
        3x3 and write it into ``fc3`` as the matrix it applies to a
        zero-bordered patch (its response to each one-hot patch)."""
        s, p = self.sharesets, self.patch
        area = p * p
        weight = self.fc3.weight
        scale, shift = bn_affine(self.fc3_bn)
        fc = weight.view(s, area, area) * scale.view(s, 1, 1)
        bias = shift.repeat_interleave(area)
        size = max(LOCAL_KERNELS)
        kernel = weight.new_zeros(s, 1, size, size)
        for branch in self.local_branches:
            k = branch.conv.kernel_size[0]
            scale, shift = bn_affine(branch.bn)
            start = (size - k) // 2
            kernel[:, :, start:start + k, start:start + k] += \
                branch.conv.weight * scale.view(s, 1, 1, 1)
            bias = bias + shift.repeat_interleave(area)
        identity = torch.eye(area, dtype=weight.dtype, device=weight.device)
        identity = identity.repeat(1, s).view(area, s, p, p)
        local = F.conv2d(identity, kernel, padding=size // 2, groups=s)
        fc = fc.view(s * area, area) + local.view(area, s * area).t()
        self.fc3.weight.copy_(fc.view_as(weight))
        self.fc3.bias = nn.Parameter(bias)
        self.fc3_bn = nn.Identity()
        for k in LOCAL_KERNELS:
            if hasattr(self, f'repconv{k}'):
                delattr(self, f'repconv{k}')


class FFNBlock(nn.Module):
    """1x1 conv-BN to 4C, GELU, 1x1 conv-BN back."""

    def __init__(self, channels, norm_cfg, ratio=4):
        super().__init__()
        hidden = channels * ratio
        self.ffn_fc1 = ConvNormAct(channels, hidden, 1, 1, 0, norm_cfg,
                                   act=False)
        self.act = nn.GELU()
        self.ffn_fc2 = ConvNormAct(hidden, channels, 1, 1, 0, norm_cfg,
                                   act=False)

    def forward(self, x):
        return self.ffn_fc2(self.act(self.ffn_fc1(x)))


class RepMLPUnit(nn.Module):
    """``x + block(bn(x))``, then ``x + ffn(bn(x))``: pre-norm residuals
    (with optional drop path, which the released network does not use)."""

    def __init__(self, channels, patch, sharesets, drop_path, norm_cfg,
                 deploy):
        super().__init__()
        self.prebn1 = build_norm_layer(norm_cfg, channels)[1]
        self.repmlp_block = RepMLPBlock(channels, patch, sharesets, norm_cfg,
                                        deploy)
        self.prebn2 = build_norm_layer(norm_cfg, channels)[1]
        self.ffn_block = FFNBlock(channels, norm_cfg)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x):
        x = x + self.drop_path(self.repmlp_block(self.prebn1(x)))
        return x + self.drop_path(self.ffn_block(self.prebn2(x)))


def _embedding(in_channels, out_channels, kernel_size, norm_cfg):
    """The stride-2 embedding between stages: the released 2x2 one, or the
    3x3/5x5 one of the paper's Cityscapes experiments (padding k // 2)."""
    return ConvNormAct(in_channels, out_channels, kernel_size, 2,
                       kernel_size // 2 if kernel_size > 2 else 0, norm_cfg)


@register_backbone
class RepMLPNet(DenseBackbone):
    """RepMLPNet backbone emitting the four stage maps, taken before each
    embedding, at strides 4, 8, 16 and 32.

    Args:
        arch (str | dict): ``'T224'``, ``'T256'``, ``'B224'``, ``'B256'``,
            ``'D256'`` or ``'L256'`` (any case), or a dict with the keys
            ``depths``, ``channels``, ``patch_sizes`` (the FC patch side of
            each stage) and ``sharesets``, one value per stage.
        in_channels (int): Input image channels. Defaults to 3.
        out_indices (Sequence[int]): Stages (0..3) whose maps are returned.
        drop_path_rate (float): Stochastic depth rate of the last unit,
            rising linearly from 0 over all units. The authors use none
            (0, the default).
        embed_kernel (int): Kernel of the stride-2 embeddings: 2 (released)
            or 3 / 5 (the paper's Cityscapes remedy for patch borders).
            Released 2x2 weights load into the middle of a 3x3 or 5x5 kernel
            so that the network computes the same as before (at even map
            sizes) until it is fine-tuned.
        norm_cfg (dict): Every norm layer, e.g. ``dict(type='SyncBN')``.
        out_norm (bool): Add a freshly initialised norm to each output. Off
            by default: the released network's stage maps carry none.
        deploy (bool): Build the deploy form (Locality Injection done), into
            which the authors' converted files load.
        frozen_stages (int): -1 freezes nothing, 0 the stem, k the stem and
            stages 1..k with the embeddings before them.
        norm_eval (bool): Keep every norm layer in eval mode while training.
        with_cp (bool): Gradient checkpointing per unit.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=PATH)``
            loads the authors' training-form files (into ``deploy=False``) or
            converted files (into ``deploy=True``), mmpretrain's files, or an
            mmhire/mmdet/mmseg checkpoint.
    """

    paper_name = 'RepMLPNet'
    # Locality Injection leaves a trainable network (every BatchNorm outside
    # fc3 stays); the authors fine-tune converted models too.
    deploy_trains = True
    arch_keys = ('depths', 'channels', 'patch_sizes', 'sharesets')
    arch_zoo = {
        't224': dict(depths=(2, 2, 6, 2), channels=(64, 128, 256, 512),
                     patch_sizes=(56, 28, 14, 7), sharesets=(1, 4, 16, 128)),
        't256': dict(depths=(2, 2, 6, 2), channels=(64, 128, 256, 512),
                     patch_sizes=(64, 32, 16, 8), sharesets=(1, 4, 16, 128)),
        'b224': dict(depths=(2, 2, 12, 2), channels=(96, 192, 384, 768),
                     patch_sizes=(56, 28, 14, 7), sharesets=(1, 4, 32, 128)),
        'b256': dict(depths=(2, 2, 12, 2), channels=(96, 192, 384, 768),
                     patch_sizes=(64, 32, 16, 8), sharesets=(1, 4, 32, 128)),
        'd256': dict(depths=(2, 2, 18, 2), channels=(80, 160, 320, 640),
                     patch_sizes=(64, 32, 16, 8), sharesets=(1, 4, 16, 128)),
        'l256': dict(depths=(2, 2, 18, 2), channels=(96, 192, 384, 768),
                     patch_sizes=(64, 32, 16, 8), sharesets=(1, 4, 32, 256)),
    }

    def __init__(self,
                 arch='T256',
                 in_channels=3,
                 out_indices=(0, 1, 2, 3),
                 drop_path_rate=0.,
                 embed_kernel=2,
                 norm_cfg=dict(type='BN', requires_grad=True),
                 out_norm=False,
                 deploy=False,
                 frozen_stages=-1,
                 norm_eval=False,
                 with_cp=False,
                 init_cfg=None):
        super().__init__(arch, in_channels, out_indices, frozen_stages,
                         norm_eval, with_cp, init_cfg)
        if embed_kernel not in EMBED_KERNELS:
            raise ArchError(f'RepMLPNet: embed_kernel must be one of '
                            f'{EMBED_KERNELS}, got {embed_kernel!r}.')
        self.embed_kernel = embed_kernel
        channels = self.arch['channels']
        self.conv_embedding = ConvNormAct(in_channels, channels[0], 4, 4, 0,
                                          norm_cfg)
        rates = self.drop_path_rates(drop_path_rate, self.arch['depths'])
        self.stages = nn.ModuleList(
            nn.Sequential(*(
                RepMLPUnit(channels[i], self.arch['patch_sizes'][i],
                           self.arch['sharesets'][i], rate, norm_cfg, deploy)
                for rate in rates[i]))
            for i in range(self.num_stages))
        self.embeds = nn.ModuleList(
            _embedding(channels[i], channels[i + 1], embed_kernel, norm_cfg)
            for i in range(self.num_stages - 1))
        if out_norm:
            self.add_out_norms(norm_cfg)
        self.deploy = deploy
        self.finish_building()

    @classmethod
    def check_arch(cls, arch):
        for key in cls.arch_keys:
            cls.require_ints(arch, key, cls.num_outs, 1)
        for c, s in zip(arch['channels'], arch['sharesets']):
            if c % s or c < 4:
                raise ArchError(
                    'RepMLPNet: each stage\'s channels must be at least 4 '
                    '(the Global Perceptron uses C // 4) and a multiple of '
                    f'its sharesets; got channels {arch["channels"]}, '
                    f'sharesets {arch["sharesets"]}.')

    def size_steps(self):
        return [[self.conv_embedding.conv], *([e.conv] for e in self.embeds)]

    def forward(self, x):
        self.check_input(x)
        return self.run_pyramid(x, self.conv_embedding, self.embeds)

    def frozen_modules(self):
        return self.frozen_pyramid(self.conv_embedding, self.embeds)

    def blocks(self):
        return [unit.repmlp_block for unit in self.stage_blocks()]

    def folded_norms(self):
        """Locality Injection in every block: the Local Perceptron and the
        FC's BatchNorm become part of ``fc3``, as in the authors' converted
        files (every other BatchNorm stays)."""
        return [norm for b in self.blocks() for norm in (
            b.fc3_bn, *(branch.bn for branch in b.local_branches))]

    def fold(self):
        for block in self.blocks():
            block.local_inject()

    def init_from_scratch(self):
        """Nothing to do: the authors train from PyTorch's default
        initialisation, which every layer already has."""

    def fit_state_dict(self, state_dict):
        """Refuse a file of the other form; place released 2x2 embedding
        kernels inside this backbone's 3x3 or 5x5 ones."""
        file_deploy = any(re.fullmatch(r'stages\.\d+\.\d+\.repmlp_block\.'
                                       r'fc3\.bias', k) for k in state_dict)
        file_train = any('.repmlp_block.fc3_bn.' in k for k in state_dict)
        if (file_deploy and not self.deploy) or (file_train and self.deploy):
            form = 'deploy' if file_deploy else 'training'
            fix = ('set deploy=True to load it' if file_deploy else
                   'load it into deploy=False and call switch_to_deploy() '
                   '(test.py --deploy does)')
            raise CheckpointError(
                f'the file holds the {form} form of RepMLPNet (Locality '
                f'Injection {"done" if file_deploy else "not done"}), the '
                f'backbone is the other form; {fix}.')
        state_dict = dict(state_dict)
        k = self.embed_kernel
        for key, value in state_dict.items():
            if not re.fullmatch(r'embeds\.\d\.conv\.weight', key):
                continue
            if value.shape[2] not in (2, k):
                raise CheckpointError(
                    f'the file\'s embeddings are {value.shape[2]}x'
                    f'{value.shape[3]} ({key}), this backbone\'s {k}x{k}; '
                    f'set embed_kernel={value.shape[2]}.')
            if value.shape[2:] == (2, 2) and k > 2:
                # out[i] = sum_a w[a] x[2i + a], a in 0..1, is the k x k
                # kernel (padding k//2) with w at rows/columns k//2..k//2+1.
                kernel = value.new_zeros(*value.shape[:2], k, k)
                kernel[:, :, k // 2:k // 2 + 2, k // 2:k // 2 + 2] = value
                state_dict[key] = kernel
        return state_dict

    # The authors' files use the module names above; mmpretrain's converted
    # ones are renamed.

    @classmethod
    def from_released(cls, state_dict):
        if any(k.startswith('patch_embed.projection.') for k in state_dict):
            state_dict = {_mmpretrain_to_official(k): v
                          for k, v in state_dict.items()}
        elif not any(k.startswith('conv_embedding.') for k in state_dict):
            return state_dict, []
        return cls.split_off(state_dict, ('head.', 'head_norm.'))

    @classmethod
    def arch_of(cls, state_dict):
        """The arch of the RepMLPNet whose tensors these are; empty for
        anything else."""
        fc3 = r'stages\.(\d)\.(\d+)\.repmlp_block\.fc3\.weight'
        depths, patches = cls.per_stage(  # fc3: (S * area, area, 1, 1)
            state_dict, fc3, lambda weight: round(weight.shape[1] ** 0.5))
        _, sharesets = cls.per_stage(
            state_dict, fc3, lambda weight: weight.shape[0] // weight.shape[1])
        _, channels = cls.per_stage(
            state_dict, r'stages\.(\d)\.(\d+)\.prebn1\.weight',
            lambda weight: weight.shape[0])
        if not any(depths):
            return {}
        return dict(depths=depths, channels=channels, patch_sizes=patches,
                    sharesets=sharesets)


_MMPRETRAIN_RENAMES = (
    (r'patch_embed\.projection\.', 'conv_embedding.conv.'),
    (r'patch_embed\.norm\.', 'conv_embedding.bn.'),
    (r'downsample_layers\.', 'embeds.'),
    (r'(stages\.\d+\.\d+\.)norm1\.', r'\1prebn1.'),
    (r'(stages\.\d+\.\d+\.)norm2\.', r'\1prebn2.'),
    (r'(\.gp\.)conv(\d)\.conv\.', r'\1fc\2.'),
    (r'final_norm\.', 'head_norm.'),
)


def _mmpretrain_to_official(key):
    """The authors' name of an mmpretrain RepMLPNet key (``backbone.``
    already removed)."""
    for pattern, replacement in _MMPRETRAIN_RENAMES:
        key = re.sub(pattern, replacement, key)
    return key
