"""The backbones mmhire registers.

``@register_backbone`` puts a backbone into ``BACKBONES`` and into mmdet's
and mmseg's model registries (each only if that library is installed: one
that is installed but fails to import is an error worth seeing). Nothing
depends on the order of ``BACKBONES``: each backbone reads its own released
files, and a file matches one backbone's names at most.
"""
import importlib
import importlib.util

BACKBONES = []


def register_backbone(cls):
    """Class decorator: register ``cls`` everywhere a config can name it."""
    BACKBONES.append(cls)
    for library in ('mmdet', 'mmseg'):
        if importlib.util.find_spec(library) is not None:
            registry = importlib.import_module(f'{library}.registry').MODELS
            registry.register_module(module=cls)
    return cls


def backbone_names():
    """The registered backbones' names, for messages and tool choices."""
    return [cls.__name__ for cls in BACKBONES]
