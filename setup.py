"""mmhire: hierarchical vision MLP backbones for MMDetection and
MMSegmentation.

Installs into the environment you have: torch, mmengine and mmcv as ranges
(torch and mmcv built for your CUDA, installed first), mmdet and
mmsegmentation as extras (``pip install -e .[det]``, ``.[seg]``,
``.[all]``). The ranges live in ``mmhire/dependencies.py``; the pinned stack
that CI runs is in ``requirements/``.
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def load(name):
    """Run a file of the package that imports only the standard library."""
    scope = {}
    exec((HERE / 'mmhire' / name).read_text(), scope)
    return scope


dependencies = load('dependencies.py')
setup(
    name='mmhire',
    version=load('version.py')['__version__'],
    description='Hierarchical vision MLP backbones (Hire-MLP, ConvMLP, '
    'RepMLPNet) for '
    'MMDetection and MMSegmentation',
    long_description=(HERE / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmhire', 'mmhire.*']),
    python_requires='>=3.9',
    install_requires=dependencies['install_requires'](),
    extras_require={**dependencies['extras_require'](),
                    'tests': ['pytest', 'pytest-xdist']},
    license='Apache-2.0',
)
