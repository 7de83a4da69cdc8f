"""What the tools check before anything heavy starts, each refused in one
line that names the problem and the fix: options and devices, the backbone's
channels against the neck, a checkpoint's fit, output paths and data."""
import argparse
import difflib
import inspect
import os
import os.path as osp
import re

import torch
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import Runner

from mmhire.checkpoint import list_keys, safe_load
from mmhire.errors import (ArchError, CheckpointError, DatasetNotFoundError,
                           MMHireError)
from mmhire.models import DenseBackbone, identify

DEMO = 'python tools/demo.py {task}'
DATA_HINTS = {
    'CocoDataset': (
        'Get COCO 2017 from https://cocodataset.org (train2017, val2017 and '
        'annotations_trainval2017) and unpack it as data/coco/train2017/, '
        'data/coco/val2017/ and data/coco/annotations/ (or link data/coco '
        'to where it is). To try mmhire without it: ' +
        DEMO.format(task='detection')),
    'ADE20KDataset': (
        'Get ADEChallengeData2016.zip from '
        'http://data.csail.mit.edu/places/ADEchallenge/ and unpack it as '
        'data/ade/ADEChallengeData2016/ (images/, annotations/). To try '
        'mmhire without it: ' + DEMO.format(task='segmentation')),
    'CityscapesDataset': (
        'Get leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from '
        'https://www.cityscapes-dataset.com, unpack both into '
        'data/cityscapes/ and make the *_gtFine_labelTrainIds.png label '
        "files with mmseg's tools/dataset_converters/cityscapes.py "
        '(the README has the command).'),
}


def check_option_keys(cfg, options):
    """Refuse a ``--cfg-options`` key whose first part is neither in the
    config nor a setting mmengine's runner reads: a misspelt one would be
    added and silently ignored."""
    known = set(cfg) | set(inspect.signature(Runner.__init__).parameters)
    for key in options:
        top = key.split('.')[0]
        if top not in known:
            close = difflib.get_close_matches(top, sorted(known), n=1)
            hint = f'; did you mean {close[0]!r}?' if close else ''
            raise MMHireError(
                f'--cfg-options {key}: {top!r} is a setting of neither the '
                f"config nor mmengine's runner, so it would be ignored{hint}")


def positive_int(text):
    """An argparse type: an int above 0."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(
            f'{text!r} is not a whole number above 0')
    return value


def resolve_device(device):
    """``--device``: ``cpu``, ``cuda`` or ``cuda:N``, refused in one line
    where it cannot run; by default CUDA where there is one."""
    if device is None:
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    match = re.fullmatch(r'cpu|cuda(?::(\d+))?', device)
    if not match:
        raise MMHireError(f'--device {device!r}: use cpu, cuda or cuda:N.')
    if device != 'cpu':
        index = int(match[1] or 0)
        if index >= torch.cuda.device_count():
            have = (f'{torch.cuda.device_count()} CUDA device(s)'
                    if torch.cuda.is_available() else 'no CUDA GPU')
            raise MMHireError(f'--device {device}: this machine has {have}; '
                              'use --device cpu.')
    return device


def model_class(cfg, part):
    """The class that ``part`` of a model config names, in the config's
    scope, or ``None``."""
    kind = part.get('type')
    if not isinstance(kind, str):
        return kind
    with MODELS.switch_scope_and_registry(
            cfg.get('default_scope')) as registry:
        return registry.get(kind)


def on_meta(cfg, part):
    """``part`` of a model config (the model, its backbone) built on the
    meta device: names and shapes, no memory and no initialisation (under a
    second for the largest of ours). A model that cannot be built there
    (mmdet's Swin reads values in its constructor) is built on the CPU."""
    init_default_scope(cfg.get('default_scope') or 'mmengine')
    try:
        with torch.device('meta'):
            return MODELS.build(part)
    except (RuntimeError, NotImplementedError):
        return MODELS.build(part)


def _listed(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_channels(cfg):
    """An mmhire backbone's maps against the channels the neck (or, without
    one, each decode head) expects: one line naming both, instead of
    mmdet's bare AssertionError or mmseg's IndexError on the first batch."""
    model = cfg.get('model') or {}
    network = model_class(cfg, model.get('backbone') or {})
    if not (isinstance(network, type) and issubclass(network, DenseBackbone)):
        return
    backbone = on_meta(cfg, model.backbone)
    maps = backbone.out_channels
    what = (f'{backbone.name()} with out_indices {backbone.out_indices} '
            f'returns {len(maps)} maps of {maps} channels')
    neck = _listed(model.get('neck'))[0]
    if neck:
        wanted = neck.get('in_channels')
        if wanted is not None and _listed(wanted) != maps:
            raise ArchError(f'model.neck.in_channels is {_listed(wanted)}, '
                            f'but {what}; set in_channels={maps} or '
                            'out_indices to match.')
        return
    for name in ('decode_head', 'auxiliary_head'):
        for head in _listed(model.get(name)):
            if not head or head.get('in_channels') is None:
                continue
            index = _listed(head.get('in_index', -1))
            if not all(-len(maps) <= i < len(maps) for i in index):
                raise ArchError(f'model.{name}.in_index is {index}, but '
                                f'{what}; set in_index or out_indices to '
                                'match.')
            wanted = _listed(head.in_channels)
            if wanted != [maps[i] for i in index]:
                raise ArchError(
                    f'model.{name}.in_channels is {wanted}, but {what} and '
                    f'in_index {index} picks {[maps[i] for i in index]}; '
                    'set in_channels to match.')


def check_writable(path, option, folder=True):
    """Refuse, before the run, an output path (a folder, or a file where
    ``folder`` is false) that cannot be written: it must not be the other
    kind, and the nearest folder at or above it must be writable."""
    if not path or '://' in str(path):
        return
    path = osp.abspath(path)
    if osp.exists(path) and osp.isdir(path) != folder:
        raise MMHireError(f'{option} {path}: it is a '
                          f'{"file" if folder else "folder"}; give a '
                          f'{"folder" if folder else "file"} path.')
    existing = path if folder else osp.dirname(path)
    while not osp.exists(existing):
        existing = osp.dirname(existing)
    if not osp.isdir(existing):
        raise MMHireError(f'{option} {path}: {existing} is a file, not a '
                          'folder; choose another path.')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise MMHireError(f'{option} {path}: cannot write in {existing} '
                          '(permission denied); choose another path.')


TASK_PARTS = {'decode_head': 'a segmentor', 'rpn_head': 'a detector',
              'roi_head': 'a detector', 'bbox_head': 'a detector'}


def looks_like(state_dict):
    """What a state dict that did not fit seems to be, for the message:
    ``a segmentor with a ConvMLP 'small' backbone``, ``a bare Hire-MLP 'tiny'
    backbone``."""
    parts = {k.split('.')[0] for k in state_dict}
    backbone = {k[len('backbone.'):]: v for k, v in state_dict.items()
                if k.startswith('backbone.')}
    match = identify(backbone or state_dict)
    network = (f'{match.backbone.describe(match.arch)} backbone'
               if match else 'backbone of none of mmhire\'s networks')
    if not backbone:
        return (f'a bare {network}' if match else
                f'no model of mmdet or mmseg (its first keys: '
                f'{list_keys(state_dict, 3)})')
    task = next((TASK_PARTS[p] for p in sorted(parts) if p in TASK_PARTS),
                'a model')
    return f'{task} with a {network}'


def check_fits(cfg, filename):
    """Refuse a checkpoint that would leave part of the config's model as
    built (mmengine only warns, then tests or resumes a half-loaded model),
    saying what the file looks like. Returns the file's state dict."""
    checkpoint = safe_load(filename)
    state_dict = checkpoint.get('state_dict', checkpoint) \
        if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict) or not all(
            torch.is_tensor(v) for v in state_dict.values()):
        raise CheckpointError(f'{filename!r} is not a checkpoint: it holds no '
                              'state dict of tensors.')
    state_dict = {k.removeprefix('module.'): v for k, v in state_dict.items()}
    expected = on_meta(cfg, cfg.model).state_dict()
    missing = [k for k in expected if k not in state_dict]
    mismatched = [k for k in expected if k in state_dict
                  and state_dict[k].shape != expected[k].shape]
    if missing or mismatched:
        problems = []
        if missing:
            problems.append(
                f'{len(missing)} tensors missing ({list_keys(missing, 3)})')
        if mismatched:
            k = mismatched[0]
            problems.append(
                f'{len(mismatched)} of another shape (e.g. {k}: '
                f'{tuple(state_dict[k].shape)} in the file, '
                f'{tuple(expected[k].shape)} in the model)')
        raise CheckpointError(
            f'{filename!r} does not fit the model of this config: '
            f'{"; ".join(problems)}; the file looks like '
            f'{looks_like(state_dict)}. Use the checkpoint that this config '
            'trained.')
    return state_dict


def leaf_datasets(cfg):
    """The leaf dataset configs inside a (possibly wrapped) dataset config."""
    if 'datasets' in cfg:
        return [leaf for sub in cfg['datasets']
                for leaf in leaf_datasets(sub)]
    if 'dataset' in cfg:
        return leaf_datasets(cfg['dataset'])
    return [cfg]


def check_data(cfg, loaders):
    """Fail early, with directions, when a dataset is not on disk."""
    for loader in loaders:
        if not cfg.get(loader):
            continue
        for dataset in leaf_datasets(cfg[loader]['dataset']):
            root = dataset.get('data_root') or ''
            paths = [dataset.get('ann_file') or '']
            paths += list((dataset.get('data_prefix') or {}).values())
            for path in paths:
                full = osp.join(root, path) if path else root
                if full and '://' not in full and not osp.exists(full):
                    hint = DATA_HINTS.get(dataset.get('type'), '')
                    raise DatasetNotFoundError(
                        f'the {loader} dataset is not there: {full} does not '
                        f'exist. {hint}')
