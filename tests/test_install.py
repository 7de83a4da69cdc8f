"""Installing into the user's own environment: ranges, not pins; mmdet and
mmsegmentation as extras; one clear line for an unsupported version; a
wheel that works from anywhere."""
import importlib.metadata
import re
import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT

from mmhire.dependencies import SUPPORTED


def test_declared_requirements_are_ranges_with_extras():
    requires = importlib.metadata.requires('mmhire')
    versions = [r.split(';')[0] for r in requires]  # before any marker
    assert not any('==' in v for v in versions), requires
    assert any(re.fullmatch(r'torch[<>=,.\d]+', v) for v in versions)
    assert all(';' not in r for r in requires
               if r.startswith(('torch', 'mmcv', 'mmengine')))
    for library, extra in (('mmdet', 'det'), ('mmsegmentation', 'seg'),
                           ('onnxruntime', 'deploy')):
        declared = [r for r in requires if r.startswith(library)]
        assert declared and all(f'extra == "{extra}"' in r or
                                'extra == "all"' in r for r in declared)
    assert any(r.startswith('mmsegmentation') and 'extra == "all"' in r
               for r in requires)
    assert any(r.startswith('ftfy') and 'extra == "seg"' in r
               for r in requires)


CHECK = '''
import importlib.metadata, sys
real = importlib.metadata.version
fake = dict(a.split('=') for a in sys.argv[1:])
importlib.metadata.version = lambda name: fake.get(name) or real(name)
import mmhire
'''


def import_with(**versions):
    return subprocess.run(
        [sys.executable, '-c', CHECK,
         *(f'{k}={v}' for k, v in versions.items())],
        capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize('package,version', [
    ('torch', '2.4.1'), ('mmengine', '0.6.0'), ('mmcv', '1.7.2'),
    ('mmcv', '2.2.0'), ('mmdet', '2.28.2'), ('mmsegmentation', '0.30.0')])
def test_an_unsupported_version_is_one_clear_line(package, version):
    result = import_with(**{package: version})
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    low, high, *_ = SUPPORTED[package]
    assert line.startswith('ImportError: mmhire: ')
    assert f'{package} {version} is installed, but mmhire supports ' \
        f'{package}>={low},<{high}; fix: ' in line
    assert re.search(r'(pip|mim) install "%s>=' % package, line)


def test_the_pinned_stack_passes_the_check():
    result = import_with()
    assert result.returncode == 0, result.stderr[-2000:]
    assert import_with(torch='2.13.0+cu130', mmcv='2.1.0').returncode == 0


def test_a_wheel_works_from_another_directory(tmp_path):
    # Built from a copy: setuptools writes build/ and *.egg-info in place.
    source = tmp_path / 'source'
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        '.venv', '.git', 'work_dirs', 'data', 'build', '*.egg-info',
        '__pycache__'))
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps',
                    '--no-build-isolation', '-q', '-w', str(tmp_path / 'dist'),
                    str(source)], check=True, capture_output=True,
                   cwd=tmp_path)
    (wheel, ) = (tmp_path / 'dist').glob('mmhire-*.whl')
    names = zipfile.ZipFile(wheel).namelist()
    assert 'mmhire/models/backbones/conv_mlp.py' in names
    assert 'mmhire/models/backbones/repmlp_net.py' in names
    assert 'mmhire/dependencies.py' in names
    assert not any(n.startswith(('tests/', 'configs/', 'tools/',
                                 'reference/')) for n in names)
    zipfile.ZipFile(wheel).extractall(tmp_path / 'site')
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, '-c', 'import mmhire, mmdet.registry as d, '
         'mmseg.registry as s; print(mmhire.__file__, '
         '[r.MODELS.get(n).__name__ for r in (d, s) '
         "for n in ('HireMLP', 'ConvMLP', 'RepMLPNet')])"],
        capture_output=True, text=True, cwd=elsewhere,
        env={'PYTHONPATH': str(tmp_path / 'site'), 'PATH': '/usr/bin:/bin'})
    assert result.returncode == 0, result.stderr[-2000:]
    assert str(tmp_path / 'site') in result.stdout
    assert str(['HireMLP', 'ConvMLP', 'RepMLPNet'] * 2) in result.stdout


@pytest.mark.heavy
def test_pip_keeps_the_users_torch_and_mmdet(tmp_path):
    """The acceptance check of installing into another stack: a fresh venv,
    the constraints of a user's environment, a dry run (needs the package
    index; with an mmcv wheel in a folder on PIP_FIND_LINKS, pip need not
    build mmcv's metadata from source)."""
    subprocess.run([sys.executable, '-m', 'venv', str(tmp_path / 'venv')],
                   check=True)
    constraints = tmp_path / 'constraints.txt'
    constraints.write_text('torch==2.14.1\nmmdet==3.2.0\nmmcv==2.1.0\n')
    result = subprocess.run(
        [str(tmp_path / 'venv/bin/pip'), 'install', '--dry-run', '-e',
         f'{ROOT}[all]', '-c', str(constraints)],
        capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    plan = result.stdout.split('Would install')[-1].split()
    assert 'torch-2.14.1' in plan and 'mmdet-3.2.0' in plan, plan
    assert 'torch-2.13.0' not in plan and 'mmdet-3.3.0' not in plan
