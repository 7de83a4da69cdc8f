"""What mmhire needs of the packages around it: one table, which setup.py
reads (it runs this file, which imports only the standard library) for
``install_requires`` and the extras, and which ``import mmhire`` checks
against what is installed, before anything fails deeper.

The pinned, reproducible stack that CI runs is in ``requirements/``.
"""
import importlib.metadata
import re

# distribution: (oldest supported, first unsupported, extra or None, why
# the floor). torch is the user's own CUDA build: setup.py declares the
# range, which a torch already there satisfies.
SUPPORTED = {
    'torch': ('2.5', '3', None,
              'torch.serialization.safe_globals and (object, name) pairs in '
              'add_safe_globals, for weights_only loading'),
    'mmengine': ('0.7.1', '1.0.0', None, 'what mmdet 3 and mmseg 1 need'),
    'mmcv': ('2.0.0', '2.2.0', None,
             'the 2.x API (mmcv.cnn, mmcv.ops); mmdet 3.x refuses 2.2'),
    # mmengine (up to 0.10.7, the newest) resolves the 'mmdet::' and
    # 'mmseg::' config paths that every mmhire config inherits from with
    # pkg_resources, which setuptools 81 removed.
    'setuptools': ('60', '81', None, "pkg_resources, for mmengine's "
                   "'mmdet::' / 'mmseg::' config paths"),
    'mmdet': ('3.0.0', '4.0.0', 'det', 'the 3.x registries and configs'),
    'mmsegmentation': ('1.0.0', '2.0.0', 'seg',
                       'the 1.x registries and configs'),
    # tools/deployment: torch's dynamo exporter writes through onnxscript
    # (which needs onnx 1.17); the tested versions are in requirements/.
    'onnx': ('1.17', '2', 'deploy', 'what onnxscript 0.5 needs'),
    'onnxscript': ('0.5', '1', 'deploy', "torch 2.9+'s ONNX exporter"),
    'onnxruntime': ('1.18', '2', 'deploy', 'opset 18 with its CPU kernels'),
}
# Modules that mmsegmentation 1.2 imports without declaring them.
EXTRA_MODULES = {'seg': ['ftfy', 'regex']}

# How users install each one; torch and mmcv depend on their CUDA.
_HOW = {
    'torch': 'install a build for your CUDA from pytorch.org, e.g. pip '
             'install "{spec}"',
    'mmcv': 'pip install -U openmim && mim install "{spec}" (a build for '
            'your torch and CUDA)',
}


def spec(name):
    low, high, *_ = SUPPORTED[name]
    return f'{name}>={low}' + (f',<{high}' if high else '')


def install_requires():
    return [spec(n) for n, (*_, extra, _why) in SUPPORTED.items()
            if extra is None]


def extras_require():
    extras = {}
    for name, (*_, extra, _why) in SUPPORTED.items():
        if extra:
            extras.setdefault(extra, []).append(spec(name))
    for extra, modules in EXTRA_MODULES.items():
        extras[extra] += modules
    extras['all'] = sorted({r for rs in extras.values() for r in rs})
    return extras


def _release(version):
    """The leading release numbers of a version string, as ints."""
    found = re.match(r'\d+(\.\d+)*', version)
    return tuple(int(p) for p in found[0].split('.')) if found else ()


def _installed(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_versions(extras=(None, 'det', 'seg')):
    """Raise ``ImportError`` with one line naming the first package of
    ``extras`` (None: the required ones) whose installed version is outside
    its range (or, for a required one, that is missing), the range and the
    command that fixes it. ``import mmhire`` checks all but the deployment
    tools' packages, which those tools check."""
    for name, (low, high, extra, _why) in SUPPORTED.items():
        if extra not in extras:
            continue
        version = _installed(name)
        if version is None and extra is None:
            found = 'is not installed'
        elif version is None:
            continue  # an optional library: mmhire adapts to its absence
        elif _release(version) < _release(low) or (
                high and _release(version) >= _release(high)):
            found = f'{version} is installed'
        else:
            continue
        how = _HOW.get(name, 'pip install "{spec}"').format(spec=spec(name))
        raise ImportError(f'mmhire: {name} {found}, but mmhire supports '
                          f'{spec(name)}; fix: {how}.')
