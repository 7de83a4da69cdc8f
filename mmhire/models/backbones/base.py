"""What every mmhire backbone shares: the ``arch_zoo`` lookup, the output and
freezing arguments of mmdet's backbones, ``norm_eval``, map sizes and the
smallest input, gradient checkpointing that updates BatchNorm statistics
once, the deploy-form template and the refusal to train it, and
``init_cfg`` Pretrained loading through the safe loader (each backbone reads
its own released files; the others only name a file that is theirs)."""
import numbers
import re
from contextlib import contextmanager, nullcontext
from functools import cached_property
from typing import NamedTuple

import torch
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from mmhire.checkpoint import list_keys, safe_load, unwrap_state_dict
from mmhire.errors import ArchError, CheckpointError, DeployError, InputError
from mmhire.models.layers import channels_last_weights
from mmhire.models.registry import BACKBONES


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


def checkpointed(block, x):
    """``block(x)``, recomputed in the backward pass (``with_cp``)."""
    return cp.checkpoint(
        block, x, use_reentrant=False,
        context_fn=lambda: (nullcontext(), _scratch_bn_statistics(block)))


def plain(value):
    """A config value as plain Python, for checking and comparing: numpy
    and tensor scalars as Python numbers, lists and arrays as tuples;
    anything else as it is."""
    if isinstance(value, (str, bytes, dict)) or value is None:
        return value
    if getattr(value, 'ndim', None) == 0 and hasattr(value, 'item'):
        return value.item()
    if isinstance(value, numbers.Number):
        return value
    try:
        return tuple(plain(v) for v in value)
    except TypeError:
        return value


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class _PlainNCHW(torch.autograd.Function):
    """Channels-last maps out as plain NCHW, with the gradient coming back
    channels-last: ``.contiguous()`` would pass a neck's NCHW gradient on
    as it is, and elementwise backward ops over mixed layouts run up to ten
    times slower."""

    @staticmethod
    def forward(ctx, x):
        return x.contiguous()

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=torch.channels_last)


class DenseBackbone(BaseModule):
    """Base of the backbones. A subclass sets ``paper_name`` (for messages),
    ``arch_zoo``, ``arch_keys`` and, where it runs on channels-last maps,
    ``channels_last``; builds its stages up to ``num_stages`` and then
    calls ``finish_building``; and implements ``forward``, ``size_steps``
    (map sizes), ``frozen_modules``, ``folded_norms`` and ``fold`` (the
    deploy form), ``init_from_scratch``, and, for checkpoints,
    ``from_released`` and ``arch_of``; where needed, ``check_arch``,
    ``map_channels``, ``fits`` and ``fit_state_dict``."""

    paper_name = None
    arch_zoo = {}
    arch_keys = ()
    num_outs = 4  # strides 4, 8, 16, 32
    channels_last = False  # whether the network runs on channels-last maps
    deploy_trains = False  # whether the deploy form can still be trained

    def __init__(self, arch, in_channels, out_indices, frozen_stages,
                 norm_eval, with_cp, init_cfg):
        super().__init__(init_cfg=init_cfg)
        self.arch = self.parse_arch(arch)
        self.out_indices = self._check_out_indices(out_indices)
        frozen_stages = plain(frozen_stages)
        if not (_is_int(frozen_stages)
                and -1 <= frozen_stages <= self.num_outs):
            raise ArchError(f'{self.name()}: frozen_stages must be in -1..'
                            f'{self.num_outs}, got {frozen_stages!r}.')
        # Only the stages that out_indices needs are built: a later one would
        # hold parameters without gradients, on which DDP waits.
        self.num_stages = max(self.out_indices) + 1
        self.in_channels = in_channels
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.deploy = False

    @classmethod
    def name(cls):
        return cls.__name__

    # Archs.

    @classmethod
    def parse_arch(cls, arch):
        """Resolve a name from ``arch_zoo`` (any case) or validate a dict."""
        if isinstance(arch, str):
            if arch.lower() not in cls.arch_zoo:
                raise ArchError(
                    f'{cls.name()}: unknown arch {arch!r}; choose one of '
                    f'{list(cls.arch_zoo)} or give a dict with the keys '
                    f'{list(cls.arch_keys)}.')
            return {k: plain(v)
                    for k, v in cls.arch_zoo[arch.lower()].items()}
        if not isinstance(arch, dict) or set(arch) != set(cls.arch_keys):
            got = sorted(arch) if isinstance(arch, dict) else type(arch)
            raise ArchError(
                f'{cls.name()}: a custom arch must be a dict with exactly the '
                f'keys {list(cls.arch_keys)}, got {got}; or use one of the '
                f'names {list(cls.arch_zoo)}.')
        arch = {k: plain(arch[k]) for k in cls.arch_keys}
        cls.check_arch(arch)
        return arch

    @classmethod
    def check_arch(cls, arch):
        """Raise ``ArchError`` for a custom arch that builds no network."""

    @classmethod
    def require_ints(cls, arch, key, count, lowest):
        """``ArchError`` unless ``arch[key]`` is ``count`` ints (one int
        where ``count`` is None), each at least ``lowest``."""
        value = arch[key] if count is not None else (arch[key], )
        if not (isinstance(value, tuple) and len(value) == (count or 1)
                and all(_is_int(v) and v >= lowest for v in value)):
            raise ArchError(
                f'{cls.name()}: arch[{key!r}] must be '
                f'{"one int" if count is None else f"{count} ints"} '
                f'>= {lowest}, got {arch[key]!r}.')

    @classmethod
    def zoo_name(cls, arch):
        """The ``arch_zoo`` name of ``arch`` (a dict of some of its keys), in
        quotes, or the dict itself."""
        for name, zoo in cls.arch_zoo.items():
            if all(zoo.get(k) == v for k, v in arch.items()):
                return repr(name)
        return ', '.join(f'{k}={v}' for k, v in arch.items())

    @classmethod
    def describe(cls, arch):
        """``Hire-MLP 'tiny'``: the network and arch, for messages."""
        return f'{cls.paper_name} {cls.zoo_name(arch)}'

    # Outputs.

    @property
    def map_channels(self):
        """Channels of the four maps: the arch's ``channels`` unless a
        backbone says otherwise."""
        return self.arch['channels']

    @property
    def out_channels(self):
        """Channels of the returned maps (a neck's ``in_channels``)."""
        return [self.map_channels[i] for i in self.out_indices]

    def add_out_norms(self, norm_cfg, skip=()):
        """A fresh norm ``norm{i}`` for each returned map but those in
        ``skip``."""
        for i in (i for i in self.out_indices if i not in skip):
            self.add_module(f'norm{i}', build_norm_layer(
                norm_cfg, self.map_channels[i])[1])

    def output(self, i, x):
        """Map ``i`` as returned: through its norm, if any, as plain NCHW,
        in the map's dtype (autocast runs GroupNorm in float32)."""
        norm = getattr(self, f'norm{i}', None)
        return _PlainNCHW.apply(norm(x).to(x.dtype) if norm is not None
                                else x)

    def _check_out_indices(self, out_indices):
        out_indices = plain(out_indices)
        if _is_int(out_indices):
            out_indices = (out_indices, )
        if not (isinstance(out_indices, tuple) and out_indices and all(
                _is_int(i) and i in range(self.num_outs)
                for i in out_indices)):
            raise ArchError(f'{self.name()}: out_indices must be a non-empty '
                            f'subset of 0..{self.num_outs - 1}, got '
                            f'{out_indices}.')
        return tuple(sorted(set(out_indices)))

    # Sizes.

    def size_steps(self):
        """For each map, the layers (convolutions or poolings) that change
        the size between the previous map (or the input) and it."""
        raise NotImplementedError

    def map_sizes(self, size):
        """Side of each of the four maps for an input side of ``size``."""
        sizes = []
        for layers in self.size_steps():
            for layer in layers:
                k, s, p = (v if isinstance(v, int) else v[0] for v in (
                    layer.kernel_size, layer.stride, layer.padding))
                size = (size + 2 * p - k) // s + 1
            sizes.append(size)
        return sizes

    def fits(self, sizes):
        """Whether the network computes maps of these sizes."""
        return min(sizes) > 0

    @cached_property
    def min_input_size(self):
        """The smallest input side the network takes."""
        return next(s for s in range(1, 4096)
                    if self.fits(self.map_sizes(s)))

    def check_input(self, x):
        if not (torch.is_tensor(x) and x.is_floating_point()):
            got = x.dtype if torch.is_tensor(x) else type(x).__name__
            raise InputError(
                f'{self.name()}: expected a floating-point tensor of '
                f'normalized images, got {got}; convert it (x.float()) and '
                "normalize it as the config's data_preprocessor does.")
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InputError(
                f'{self.name()}: expected an (N, {self.in_channels}, H, W) '
                f'batch, got shape {tuple(x.shape)}.')
        if min(x.shape[2:]) < self.min_input_size:
            size = self.min_input_size
            raise InputError(
                f'{self.name()}: a {x.shape[2]}x{x.shape[3]} input is too '
                f'small for this arch; images must be at least {size}x'
                f'{size} (pad or resize them).')

    # Training.

    def run_pyramid(self, x, stem, downsamples):
        """The returned maps of ``stem`` followed by ``self.stages``, stage
        ``i > 0`` preceded by ``downsamples[i - 1]``."""
        x, outs = stem(x), []
        for i, stage in enumerate(self.stages):
            if i:
                x = downsamples[i - 1](x)
            x = self.run_blocks(stage, x)
            if i in self.out_indices:
                outs.append(self.output(i, x))
        return tuple(outs)

    def run_blocks(self, blocks, x):
        """Apply ``blocks`` in turn; under ``with_cp``, while autograd
        records, each block with trainable parameters is checkpointed
        (whether or not its input needs a gradient: after a frozen stem it
        does not)."""
        if not (self.with_cp and torch.is_grad_enabled()):
            return blocks(x)
        for block in blocks:
            trains = any(p.requires_grad for p in block.parameters())
            x = checkpointed(block, x) if trains else block(x)
        return x

    @staticmethod
    def drop_path_rates(rate, depths):
        """Per stage, the stochastic depth rates of its blocks, rising
        linearly from 0 to ``rate`` over all blocks of ``depths``: plain
        floats, so that a backbone builds on any device (``meta``
        included) and a truncated one keeps the rates of the full one."""
        total = sum(depths)
        rates = [rate * i / max(total - 1, 1) for i in range(total)]
        return [rates[sum(depths[:i]):sum(depths[:i + 1])]
                for i in range(len(depths))]

    def stage_blocks(self):
        """Every block of ``self.stages``, where each stage is a sequence of
        blocks."""
        return [block for stage in self.stages for block in stage]

    def frozen_modules(self):
        """The modules that ``frozen_stages`` freezes."""
        raise NotImplementedError

    def frozen_pyramid(self, stem, downsamples):
        """``frozen_modules`` of a pyramid as ``run_pyramid`` runs it: the
        stem, then each frozen stage with the layer before it and its
        output norm."""
        if self.frozen_stages < 0:
            return []
        modules = [stem]
        for i in range(min(self.frozen_stages, self.num_stages)):
            if i:
                modules.append(downsamples[i - 1])
            modules.append(self.stages[i])
            if hasattr(self, f'norm{i}'):
                modules.append(getattr(self, f'norm{i}'))
        return modules

    def finish_building(self):
        """The end of a subclass's ``__init__``: weights laid out as the
        gradients of a channels-last network come (so that DDP copies none
        and warns of no stride mismatch), then ``frozen_stages``."""
        if self.channels_last:
            channels_last_weights(self)
        self._freeze_stages()

    def _freeze_stages(self):
        for module in self.frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode=True):
        if mode and self.deploy and not self.deploy_trains:
            raise DeployError(
                f'{self.name()}: this network was switched to its deploy '
                'form (its BatchNorms are folded away) and cannot be trained; '
                'build it anew, or load the checkpoint again, to train.')
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    # The deploy form.

    def switch_to_deploy(self):
        """Fold the BatchNorms that ``folded_norms`` names into the layers
        next to them, for inference; eval-mode outputs stay the same (the
        folds run in float64 whatever the network's dtype).
        Refused, before anything changes, where one of them is not a
        BatchNorm (``norm_cfg``)."""
        if self.deploy:
            return
        others = {type(n).__name__ for n in self.folded_norms()
                  if not isinstance(n, _BatchNorm)}
        if others:
            raise DeployError(
                f'{self.name()}: switch_to_deploy folds BatchNorm layers '
                f'only; this network has {sorted(others)} (norm_cfg). Build '
                "it with norm_cfg=dict(type='BN') (or SyncBN) to deploy it.")
        # The folds in float64, outside autocast (so never in TF32 or half
        # precision), then back to the network's dtype.
        weight = next(self.parameters())
        dtype = weight.dtype
        with torch.autocast(weight.device.type, enabled=False):
            self.double().fold()
        self.to(dtype)
        self.deploy = True
        self.eval()

    def folded_norms(self):
        """The norm layers that ``fold`` removes."""
        raise NotImplementedError

    def fold(self):
        """Fold ``folded_norms`` (BatchNorms in eval mode) away."""
        raise NotImplementedError

    # Weights.

    def init_weights(self):
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            if 'checkpoint' not in cfg:
                raise ArchError(f"{self.name()}: init_cfg=dict(type="
                                "'Pretrained') needs checkpoint=PATH.")
            self.load_pretrained(cfg['checkpoint'],
                                 use_ema=cfg.get('use_ema', False))
        elif cfg is not None:
            super().init_weights()
        else:
            MMLogger.get_current_instance().info(
                f'{self.name()}: no pretrained weights given; training from '
                'scratch.')
            self.init_from_scratch()

    def init_from_scratch(self):
        raise NotImplementedError

    def full_state_dict(self):
        """The state dict of this backbone, or, where ``out_indices`` leaves
        stages unbuilt, of the whole network (tensors on the meta device:
        shapes only), as a checkpoint of its arch holds it."""
        if self.num_stages == self.num_outs:
            return self.state_dict()
        with torch.device('meta'):
            return type(self)(self.arch).state_dict()

    @classmethod
    def from_released(cls, state_dict):
        """``(state_dict in this backbone's names, the released classifier's
        keys it left out)``; a state dict in other names comes back as it
        is."""
        return state_dict, []

    @classmethod
    def arch_of(cls, state_dict):
        """The arch (a dict of some of ``arch_keys``) of this backbone whose
        tensors, in its own names, these are; empty for anything else."""
        raise NotImplementedError

    @staticmethod
    def per_stage(state_dict, pattern, measure, stages=4):
        """``(blocks of each stage, measure(tensor) of each stage)`` over the
        keys that match ``pattern``, whose two groups are a stage and a
        block index; 0 for a stage without such keys. What ``arch_of``
        reads a state dict with."""
        depths, values = [0] * stages, [0] * stages
        for key, value in state_dict.items():
            m = re.fullmatch(pattern, key)
            if m:
                stage = int(m[1])
                depths[stage] = max(depths[stage], int(m[2]) + 1)
                values[stage] = measure(value)
        return tuple(depths), tuple(values)

    @classmethod
    def recognise(cls, state_dict):
        """The state dict read as this backbone's: a ``Match`` whose arch is
        empty where it is not this network's."""
        state_dict, dropped = cls.from_released(state_dict)
        return Match(cls, state_dict, dropped, cls.arch_of(state_dict))

    @staticmethod
    def split_off(state_dict, prefixes):
        """``(state_dict without the keys starting with prefixes, those
        keys)``: a released classifier's tensors that a backbone lacks."""
        dropped = [k for k in state_dict if k.startswith(prefixes)]
        return ({k: v for k, v in state_dict.items() if k not in dropped},
                dropped)

    def fit_state_dict(self, state_dict):
        """A checkpoint's state dict (in this backbone's names) made to fit
        this instance, for options that change a tensor's form; raise
        ``CheckpointError`` for a file that must not load into it."""
        return state_dict

    def load_pretrained(self, filename, use_ema=False):
        """Load a checkpoint (released, mmengine's, or a bare state dict)
        and log one line saying what was loaded. A file of another network
        or arch, shapes that do not fit, or a file that would leave most of
        the backbone uninitialised, are errors; the backbone is left
        untouched."""
        found, kind = unwrap_state_dict(safe_load(filename), use_ema)
        network = type(self)
        _, state_dict, dropped, file_arch = network.recognise(found)
        expected = self.state_dict()
        model_arch = network.arch_of(self.full_state_dict())
        other = None if file_arch else identify(found)
        if other is not None:
            raise CheckpointError(
                f'{filename!r} holds a {other.backbone.describe(other.arch)} '
                f'network, not a {network.paper_name} one; this backbone is '
                f'{network.describe(model_arch)}. Use '
                f'type={other.backbone.__name__!r} or a {network.paper_name} '
                'checkpoint.')
        if dropped:
            kind = f'released ImageNet checkpoint, {kind}'
        try:
            state_dict = self.fit_state_dict(state_dict)
        except CheckpointError as e:
            raise CheckpointError(f'{filename!r}: {e}') from None

        out_norms = tuple(f'norm{i}.' for i in range(network.num_outs))
        mismatched = [k for k in state_dict if k in expected
                      and state_dict[k].shape != expected[k].shape]
        if mismatched or (file_arch and file_arch != model_arch):
            example = ''
            if mismatched:
                k = mismatched[0]
                example = (f'; e.g. {k} is {tuple(state_dict[k].shape)} in '
                           f'the file, {tuple(expected[k].shape)} in the '
                           'model')
            raise CheckpointError(
                f'{filename!r} does not fit this backbone: the file holds '
                f'arch {network.zoo_name(file_arch)}, the backbone is '
                f'{network.zoo_name(model_arch)}{example}. Set arch to '
                'match.')
        body = [k for k in expected if not k.startswith(out_norms)]
        missing = [k for k in body if k not in state_dict]
        if len(missing) * 2 > len(body):
            raise CheckpointError(
                f'{filename!r} would leave {len(missing)} of the backbone\'s '
                f'{len(body)} tensors uninitialised: it is not a '
                f'{network.paper_name} checkpoint of this arch (its first '
                f'keys: {list_keys(state_dict, 4)}).')

        loaded = {k: v for k, v in state_dict.items() if k in expected}
        self.load_state_dict(loaded, strict=False)
        fresh = sorted({k.split('.')[0] for k in expected
                        if k.startswith(out_norms) and k not in state_dict})
        ignored = [k for k in state_dict if k not in expected]
        message = (f'{self.name()}: loaded {len(loaded)} tensors from '
                   f'{filename} ({kind}); ')
        message += (f'backbone tensors not in the file: {list_keys(missing)}'
                    if missing else 'no backbone tensor missing')
        if dropped:
            message += f"; skipped the classifier's {list_keys(dropped)}"
        if fresh:
            message += f'; fresh per-output norms: {", ".join(fresh)}'
        if ignored and self.num_stages < self.num_outs:
            unbuilt = sorted({'.'.join(k.split('.')[:2]) for k in ignored})
            message += (f'; not needed for out_indices {self.out_indices}: '
                        f'{len(ignored)} tensors of {", ".join(unbuilt)}')
        elif ignored:
            message += f'; ignored, not in this backbone: {list_keys(ignored)}'
        MMLogger.get_current_instance().info(message)
        return message


class Match(NamedTuple):
    """A state dict read as one backbone's."""
    backbone: type
    state_dict: dict  # in the backbone's names
    dropped: list  # the released classifier's keys, left out
    arch: dict  # empty where the state dict is not this backbone's


def identify(state_dict):
    """The ``Match`` of the registered backbone whose tensors these are, or
    ``None``."""
    for backbone in BACKBONES:
        match = backbone.recognise(state_dict)
        if match.arch:
            return match
    return None


def switch_to_deploy(model):
    """Switch every mmhire backbone inside ``model`` (a backbone, a detector,
    a segmentor or a test-time-augmentation wrapper) to its deploy form.
    Returns how many there were."""
    backbones = [m for m in model.modules() if isinstance(m, DenseBackbone)]
    for backbone in backbones:
        backbone.switch_to_deploy()
    return len(backbones)
