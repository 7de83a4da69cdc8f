import importlib
import importlib.util

from .backbones import HireMLP, switch_to_deploy

__all__ = ['HireMLP', 'switch_to_deploy']


def _register_backbones():
    """Put HireMLP into mmdet's and mmseg's model registries, each only if
    that library is installed (an installed one that fails to import is an
    error worth seeing, not a reason to skip)."""
    for library in ('mmdet', 'mmseg'):
        if importlib.util.find_spec(library) is None:
            continue
        registry = importlib.import_module(f'{library}.registry').MODELS
        if registry.get('HireMLP') is not HireMLP:
            registry.register_module(module=HireMLP)


_register_backbones()
