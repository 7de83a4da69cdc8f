"""mmhire: the Hire-MLP backbone for MMDetection and MMSegmentation."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def requirements(name):
    lines = (HERE / 'requirements' / name).read_text().splitlines()
    return [line.split('#')[0].strip() for line in lines
            if line.split('#')[0].strip()]


def version():
    scope = {}
    exec((HERE / 'mmhire' / 'version.py').read_text(), scope)
    return scope['__version__']


setup(
    name='mmhire',
    version=version(),
    description='Hire-MLP backbone for MMDetection and MMSegmentation',
    long_description=(HERE / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmhire', 'mmhire.*']),
    python_requires='>=3.9',
    install_requires=requirements('torch.txt') + requirements('runtime.txt'),
    extras_require={'tests': requirements('tests.txt')},
    license='Apache-2.0',
)
