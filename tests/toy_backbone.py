"""A toy fourth backbone, a few layers on the base class, with its case:
``pytest -p toy_backbone`` registers it, and the contract test runs on it as
on the real ones (test_contract.py checks that it does)."""
import torch.nn as nn
from cases import CASES, Case

from mmhire.models import DenseBackbone, register_backbone
from mmhire.models.layers import ConvNormAct


@register_backbone
class ToyMLP(DenseBackbone):
    """A 4x4 stem, stages of 3x3 and 1x1 conv-BN-ReLU blocks, and 2x2
    downsamplings."""

    paper_name = 'Toy-MLP'
    arch_keys = ('depths', 'channels')
    arch_zoo = {'toy': dict(depths=(1, 1, 1, 1), channels=(8, 16, 24, 32))}

    def __init__(self, arch='toy', in_channels=3, out_indices=(0, 1, 2, 3),
                 norm_cfg=dict(type='BN'), frozen_stages=-1, norm_eval=False,
                 with_cp=False, init_cfg=None):
        super().__init__(arch, in_channels, out_indices, frozen_stages,
                         norm_eval, with_cp, init_cfg)
        channels = self.arch['channels']
        self.stem = ConvNormAct(in_channels, channels[0], 4, 4, 0, norm_cfg)
        self.downsamples = nn.ModuleList(
            ConvNormAct(channels[i], channels[i + 1], 2, 2, 0, norm_cfg)
            for i in range(self.num_stages - 1))
        self.stages = nn.ModuleList(
            nn.Sequential(*(nn.Sequential(ConvNormAct(c, c, 3, 1, 1, norm_cfg),
                                          ConvNormAct(c, c, 1, 1, 0, norm_cfg))
                            for _ in range(depth)))
            for c, depth in zip(channels[:self.num_stages],
                                self.arch['depths']))
        self.finish_building()

    def forward(self, x):
        self.check_input(x)
        return self.run_pyramid(x, self.stem, self.downsamples)

    def size_steps(self):
        return [[self.stem.conv], *([d.conv] for d in self.downsamples)]

    def frozen_modules(self):
        return self.frozen_pyramid(self.stem, self.downsamples)

    def _layers(self):
        return [m for m in self.modules() if isinstance(m, ConvNormAct)]

    def folded_norms(self):
        return [layer.bn for layer in self._layers()]

    def fold(self):
        for layer in self._layers():
            layer.fold()

    def init_from_scratch(self):
        pass

    @classmethod
    def from_released(cls, state_dict):
        return cls.split_off(state_dict, ('head.', ))

    @classmethod
    def arch_of(cls, state_dict):
        depths, channels = cls.per_stage(
            state_dict, r'stages\.(\d)\.(\d+)\.0\.conv\.weight',
            lambda weight: weight.shape[0])
        return dict(depths=depths, channels=channels) if any(depths) else {}


class ToyClassifier(ToyMLP):
    """The toy's 'released' network: the backbone and a classifier head."""

    def __init__(self, arch):
        super().__init__(arch)
        self.head = nn.Linear(self.arch['channels'][-1], 10)

    def dense_maps(self, x):
        return self(x)


TOY = dict(depths=(1, 2, 1, 1), channels=(8, 8, 16, 16))
CASES['ToyMLP'] = Case(TOY, lambda: ToyClassifier(TOY), module='toy_backbone')
