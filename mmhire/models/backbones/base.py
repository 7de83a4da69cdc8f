"""What every mmhire backbone shares: the ``arch_zoo`` lookup, the output and
freezing arguments of mmdet's backbones, ``norm_eval``, gradient
checkpointing that updates BatchNorm statistics once, the refusal to train a
deploy form, and ``init_cfg`` Pretrained loading through the safe loader."""
from contextlib import contextmanager, nullcontext

import torch
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from mmhire.errors import ArchError, DeployError, InputError


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
    """Base of the backbones: subclasses set ``paper_name`` (for messages),
    ``arch_zoo`` and ``arch_keys``, build their layers, and implement
    ``frozen_modules``, ``switch_to_deploy`` and ``init_from_scratch``
    (``map_channels`` where the maps are not the arch's ``channels``); for
    checkpoints, ``from_released`` and ``arch_of`` (see
    ``mmhire.checkpoint``), and ``fit_state_dict`` where an option changes
    a tensor's form."""

    paper_name = None
    arch_zoo = {}
    arch_keys = ()
    num_outs = 4  # strides 4, 8, 16, 32
    deploy_trains = False  # whether the deploy form can still be trained

    def __init__(self, arch, in_channels, out_indices, frozen_stages,
                 norm_eval, with_cp, init_cfg):
        super().__init__(init_cfg=init_cfg)
        self.arch = self.parse_arch(arch)
        self.out_indices = self._check_out_indices(out_indices)
        if not -1 <= frozen_stages <= self.num_outs:
            raise ArchError(f'{self.name()}: frozen_stages must be in -1..'
                            f'{self.num_outs}, got {frozen_stages}.')
        self.in_channels = in_channels
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.deploy = False

    @classmethod
    def name(cls):
        return cls.__name__

    @classmethod
    def parse_arch(cls, arch):
        """Resolve a name from ``arch_zoo`` (any case) or validate a dict."""
        if isinstance(arch, str):
            if arch.lower() not in cls.arch_zoo:
                raise ArchError(
                    f'{cls.name()}: unknown arch {arch!r}; choose one of '
                    f'{list(cls.arch_zoo)} or give a dict with the keys '
                    f'{list(cls.arch_keys)}.')
            return {k: v if isinstance(v, int) else tuple(v)
                    for k, v in cls.arch_zoo[arch.lower()].items()}
        if not isinstance(arch, dict) or set(arch) != set(cls.arch_keys):
            got = sorted(arch) if isinstance(arch, dict) else type(arch)
            raise ArchError(
                f'{cls.name()}: a custom arch must be a dict with exactly the '
                f'keys {list(cls.arch_keys)}, got {got}; or use one of the '
                f'names {list(cls.arch_zoo)}.')
        arch = {k: arch[k] if isinstance(arch[k], (int, float))
                else tuple(arch[k]) for k in cls.arch_keys}
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
                and all(isinstance(v, int) and v >= lowest for v in value)):
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

    @property
    def map_channels(self):
        """Channels of the four maps: the arch's ``channels`` unless a
        backbone says otherwise."""
        return self.arch['channels']

    @property
    def out_channels(self):
        """Channels of the returned maps (a neck's ``in_channels``)."""
        return [self.map_channels[i] for i in self.out_indices]

    def add_out_norms(self, norm_cfg):
        """A fresh norm ``norm{i}`` for each returned map."""
        for i in self.out_indices:
            self.add_module(f'norm{i}', build_norm_layer(
                norm_cfg, self.map_channels[i])[1])

    def output(self, i, x):
        """Map ``i`` as returned: through its norm, if any, as plain NCHW."""
        norm = getattr(self, f'norm{i}', None)
        return _PlainNCHW.apply(norm(x) if norm is not None else x)

    def _check_out_indices(self, out_indices):
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        out_indices = tuple(out_indices)
        if not out_indices or any(
                i not in range(self.num_outs) for i in out_indices):
            raise ArchError(f'{self.name()}: out_indices must be a non-empty '
                            f'subset of 0..{self.num_outs - 1}, got '
                            f'{out_indices}.')
        return tuple(sorted(set(out_indices)))

    def check_input(self, x, min_size=1):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InputError(
                f'{self.name()}: expected an (N, {self.in_channels}, H, W) '
                f'batch, got shape {tuple(x.shape)}.')
        if min(x.shape[2:]) < min_size:
            raise InputError(
                f'{self.name()}: a {x.shape[2]}x{x.shape[3]} input is too '
                f'small for this arch; images must be at least {min_size}x'
                f'{min_size} (pad or resize them).')

    def run_blocks(self, blocks, x):
        """Apply ``blocks`` in turn, each checkpointed under ``with_cp``."""
        if not (self.with_cp and x.requires_grad):
            return blocks(x)
        for block in blocks:
            x = checkpointed(block, x)
        return x

    def frozen_modules(self):
        """The modules that ``frozen_stages`` freezes."""
        raise NotImplementedError

    def frozen_pyramid(self, stem, downsamples):
        """``frozen_modules`` of a stem followed by ``self.stages``, stage
        ``i > 0`` preceded by ``downsamples[i - 1]``: the stem, then each
        frozen stage with the layer before it and its output norm."""
        if self.frozen_stages < 0:
            return []
        modules = [stem]
        for i in range(self.frozen_stages):
            if i:
                modules.append(downsamples[i - 1])
            modules.append(self.stages[i])
            if hasattr(self, f'norm{i}'):
                modules.append(getattr(self, f'norm{i}'))
        return modules

    @staticmethod
    def split_off(state_dict, prefixes):
        """``(state_dict without the keys starting with prefixes, those
        keys)``: a released classifier's tensors that a backbone lacks."""
        dropped = [k for k in state_dict if k.startswith(prefixes)]
        return ({k: v for k, v in state_dict.items() if k not in dropped},
                dropped)

    def _freeze_stages(self):
        for module in self.frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def refuse_to_fold(self, norms):
        """``DeployError`` unless every norm in ``norms`` is a BatchNorm."""
        others = {type(n).__name__ for n in norms
                  if not isinstance(n, _BatchNorm)}
        if others:
            raise DeployError(
                f'{self.name()}: switch_to_deploy folds BatchNorm layers '
                f'only; this network has {sorted(others)} (norm_cfg). Build it with '
                f"norm_cfg=dict(type='BN') (or SyncBN) to deploy it.")

    def train(self, mode=True):
        if mode and self.deploy and not self.deploy_trains:
            raise DeployError(
                f'{self.name()}: this network was switched to its deploy form '
                '(its BatchNorms are folded away) and cannot be trained; build '
                'it anew, or load the checkpoint again, to train.')
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
                raise ArchError(f"{self.name()}: init_cfg=dict(type="
                                "'Pretrained') needs checkpoint=PATH.")
            from mmhire.checkpoint import load_pretrained
            load_pretrained(self, cfg['checkpoint'],
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

    def fit_state_dict(self, state_dict):
        """A checkpoint's state dict (in this backbone's names) made to fit
        this instance, for options that change a tensor's form; raise
        ``CheckpointError`` for a file that must not load into it."""
        return state_dict


def switch_to_deploy(model):
    """Switch every mmhire backbone inside ``model`` (a backbone, a detector,
    a segmentor or a test-time-augmentation wrapper) to its deploy form.
    Returns how many there were."""
    backbones = [m for m in model.modules() if isinstance(m, DenseBackbone)]
    for backbone in backbones:
        backbone.switch_to_deploy()
    return len(backbones)
