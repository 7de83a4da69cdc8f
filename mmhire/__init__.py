"""mmhire: the Hire-MLP backbone for MMDetection and MMSegmentation.

``import mmhire`` (or ``custom_imports=dict(imports=['mmhire'])`` in a
config) registers ``HireMLP`` in the model registries of mmdet and mmseg and
lets mmengine load the checkpoints it writes under ``weights_only=True``.
"""
from .checkpoint import register_runner_globals
from .models import HireMLP
from .version import __version__

register_runner_globals()

__all__ = ['HireMLP', '__version__']
