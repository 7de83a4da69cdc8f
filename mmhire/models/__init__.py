import importlib
import importlib.util

from .backbones import (BACKBONES, ConvMLP, DenseBackbone, HireMLP,
                        RepMLPNet, switch_to_deploy)

__all__ = ['BACKBONES', 'ConvMLP', 'DenseBackbone', 'HireMLP', 'RepMLPNet',
           'switch_to_deploy']


def _register_backbones():
    """Put every backbone into mmdet's and mmseg's model registries, each
    only if that library is installed (an installed one that fails to import
    is an error worth seeing, not a reason to skip)."""
    for library in ('mmdet', 'mmseg'):
        if importlib.util.find_spec(library) is None:
            continue
        registry = importlib.import_module(f'{library}.registry').MODELS
        for backbone in BACKBONES:
            if registry.get(backbone.__name__) is not backbone:
                registry.register_module(module=backbone)


_register_backbones()
