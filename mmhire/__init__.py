"""mmhire: hierarchical vision MLP backbones for MMDetection and
MMSegmentation.

``import mmhire`` (or ``custom_imports=dict(imports=['mmhire'])`` in a
config) checks the versions of the stack, registers every backbone in
``mmhire.models.BACKBONES`` in the model registries of mmdet and mmseg, and
lets mmengine load the checkpoints it writes under ``weights_only=True``.
"""
from .dependencies import check_versions

check_versions()  # one clear line before anything fails deeper

from .checkpoint import register_runner_globals  # noqa: E402
from .models import ConvMLP, HireMLP, RepMLPNet, WaveMLP  # noqa: E402
from .version import __version__  # noqa: E402

register_runner_globals()

__all__ = ['ConvMLP', 'HireMLP', 'RepMLPNet', 'WaveMLP', '__version__']
