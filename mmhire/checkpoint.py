"""Safe checkpoint reading: the allowlists, ``safe_load``, readability, the
newest readable checkpoint of a run, the state dict inside a container, and
whether a file fits a model. Models convert their own names
(``DenseBackbone.load_pretrained``); nothing here knows a backbone.

Everything is read with ``torch.load(weights_only=True)``. Beyond tensors
and plain containers, exactly these pickled types are allowed:

* runner checkpoints written by mmengine (mmdet/mmseg/mmhire runs): its
  ``HistoryBuffer`` with the numpy arrays and scalars inside, and
  ``getattr`` narrowed to looking up HistoryBuffer's statistics methods,
  which is how they are pickled;
* released ImageNet checkpoints: additionally ``argparse.Namespace`` (their
  ``args``), and, for the RepMLPNet authors' training checkpoints, a
  stand-in for the yacs ``CfgNode`` of their ``config`` entry that reads
  it as a plain ``OrderedDict`` (yacs itself is neither needed nor
  imported), with the ``set`` its attributes hold.

A file that needs anything else is refused, naming the type; nothing in a
checkpoint is ever executed.
"""
import argparse
import glob
import logging
import os.path as osp
import pickle
import re
import zipfile
from collections import OrderedDict

import numpy as np
import torch
from mmengine.fileio import get_local_path
from mmengine.logging import HistoryBuffer, print_log

from mmhire.errors import CheckpointError

_multiarray = getattr(np, '_core', None) or np.core  # numpy 2 or numpy 1
_multiarray = _multiarray.multiarray
_NUMPY_DTYPES = tuple(
    type(np.dtype(t))
    for t in ('float16', 'float32', 'float64', 'int32', 'int64', 'bool'))


def _history_buffer_method(owner, name):
    """Stand-in for ``builtins.getattr`` while unpickling."""
    if owner is HistoryBuffer and name in ('min', 'max', 'mean', 'current'):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({owner!r}, {name!r}) is not a HistoryBuffer statistic')


RUNNER_GLOBALS = [
    HistoryBuffer,
    (_history_buffer_method, 'builtins.getattr'),
    np.ndarray,
    np.dtype,
    *_NUMPY_DTYPES,
    # numpy 2 pickles these under numpy._core, numpy 1 under numpy.core.
    *((getattr(_multiarray, f), f'numpy.{core}.multiarray.{f}')
      for f in ('_reconstruct', 'scalar') for core in ('_core', 'core')),
]


class _YacsConfig:
    """Unpickles a yacs ``CfgNode`` as an ``OrderedDict`` of its entries
    (the unpickler fills in only such plain types; the node's bookkeeping
    attributes end up in the dict's ``__dict__``)."""

    def __new__(cls, *args):
        return OrderedDict()


RELEASED_GLOBALS = [argparse.Namespace, (_YacsConfig, 'yacs.config.CfgNode'),
                    set]


def register_runner_globals():
    """Let mmengine's own ``torch.load`` calls (``--resume``, ``load_from``,
    ``test.py``) read the checkpoints mmengine writes, under
    ``weights_only=True``. Idempotent."""
    torch.serialization.add_safe_globals(RUNNER_GLOBALS)


def safe_load(filename):
    """``torch.load`` a checkpoint with ``weights_only=True`` and the
    allowlist above, onto the CPU; ``CheckpointError`` in one line for a
    file that is missing, unreadable, not torch's or refused."""
    register_runner_globals()
    # The context removes its entries on exit: give it only what it adds.
    scoped = [g for g in RELEASED_GLOBALS
              if g not in torch.serialization.get_safe_globals()]
    with get_local_path(filename) as path:
        if not osp.exists(path):
            raise CheckpointError(
                f'checkpoint {filename!r} does not exist; check the path in '
                "init_cfg=dict(type='Pretrained', checkpoint=...) or on the "
                'command line.')
        check_readable(path)  # before torch reads a text file as a pickle
        try:
            with torch.serialization.safe_globals(scoped):
                return torch.load(path, map_location='cpu',
                                  weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(refusal(filename, e)) from None
        except (RuntimeError, EOFError, KeyError, IndexError, ValueError,
                OSError) as e:  # a damaged archive or pre-1.6 file
            raise CheckpointError(
                f'cannot read checkpoint {str(filename)!r}: torch stopped '
                f'reading it ({type(e).__name__}: {str(e)[:120]}). Use '
                'another checkpoint.') from None


def refusal(filename, error):
    """The one line for a pickle that ``weights_only`` refused: what it
    holds, that nothing ran and what to do; never torch's advice to turn
    the safety off."""
    found = re.search(
        r"GLOBAL (\S+)|got <class '([^']+)'>|(getattr\(.*?\)) is not",
        str(error))
    if found:
        what = 'a pickled ' + next(g for g in found.groups() if g)
    else:  # torch's reason: the paragraph that is neither advice nor link
        reason = next((p.strip() for p in str(error).split('\n\n')
                       if p.strip() and not p.startswith(
                           ('Weights only load failed', 'Check the doc'))),
                      'something else')
        what = f'pickled code or data of another kind ({reason})'
    return (f'refused to load {filename!r}: it holds {what}, which no '
            'weights file needs, so it was not unpickled and nothing in it '
            'ran. Re-save the weights as a plain state dict '
            '(torch.save(model.state_dict(), path)) where the file was '
            'made.')


def unreadable(filename):
    """Why a local checkpoint cannot be read, or ``None`` if it is whole: a
    zip archive (torch's format since 1.6) with its directory in place and
    every entry's checksum right. Reads the file once; unpickles nothing."""
    if not osp.isfile(filename):
        return 'it does not exist'
    if osp.getsize(filename) == 0:
        return 'it is empty (0 bytes)'
    if not zipfile.is_zipfile(filename):
        with open(filename, 'rb') as f:
            if f.read(2) == b'\x80\x02':  # torch's format before 1.6
                return None
        return ('it is truncated, or not a file written by torch.save (no '
                'archive directory at its end)')
    try:
        with zipfile.ZipFile(filename) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f'its archive is damaged ({e})'
    if damaged:
        return f'its entry {damaged} is damaged (checksum mismatch)'
    return None


def check_readable(filename):
    """``CheckpointError`` naming the file and what is wrong with it, for a
    local file that cannot be read."""
    if '://' in str(filename):
        return
    why = unreadable(filename)
    if why:
        raise CheckpointError(
            f'cannot read checkpoint {str(filename)!r}: {why}. Use another '
            'checkpoint (an earlier one of the run, or the file again from '
            'where it came).')


def newest_readable_checkpoint(work_dir):
    """For ``--resume`` without a path: the checkpoint that
    ``last_checkpoint`` names if it is readable; otherwise, with a warning
    naming each unreadable one, the newest readable ``*.pth`` in
    ``work_dir``; ``None`` if there is none."""
    candidates = []
    marker = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(marker):
        with open(marker) as f:
            candidates.append(f.read().strip())
    candidates += sorted(glob.glob(osp.join(work_dir, '*.pth')),
                         key=osp.getmtime, reverse=True)
    for path in dict.fromkeys(candidates):
        why = unreadable(path)
        if why is None:
            return path
        print_log(f'mmhire: not resuming from {path}: {why}; trying the '
                  'newest readable checkpoint instead', logger='current',
                  level=logging.WARNING)
    return None


def unwrap_state_dict(checkpoint, use_ema=False):
    """``(state dict, its kind)`` inside any supported container: a released
    file (``model`` or timm's ``state_dict``; with ``use_ema``, their EMA
    weights ``model_ema`` or ``state_dict_ema``), an mmengine checkpoint
    (``state_dict``; the ``backbone.*`` keys of a detector or segmentor) or
    a bare state dict; ``module.`` prefixes removed."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'a checkpoint must be a dict, got '
                              f'{type(checkpoint).__name__}.')
    if use_ema:
        ema = [k for k in ('model_ema', 'state_dict_ema') if k in checkpoint]
        if not ema:
            raise CheckpointError(
                'use_ema=True, but the checkpoint has no EMA weights (no '
                f'model_ema or state_dict_ema; its keys: '
                f'{sorted(checkpoint)[:8]}).')
        state_dict, kind = checkpoint[ema[0]], 'EMA weights'
    elif 'state_dict' in checkpoint:
        state_dict, kind = checkpoint['state_dict'], 'state_dict'
    elif 'model' in checkpoint:
        state_dict, kind = checkpoint['model'], 'model weights'
    else:
        state_dict, kind = checkpoint, 'bare state dict'
    if not isinstance(state_dict, dict) or not all(
            isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(
            f'found no state dict in the checkpoint (its keys: '
            f'{sorted(checkpoint)[:8]}).')
    state_dict = {k.removeprefix('module.'): v for k, v in state_dict.items()}
    if any(k.startswith('backbone.') for k in state_dict):
        state_dict = {k[len('backbone.'):]: v for k, v in state_dict.items()
                      if k.startswith('backbone.')}
        kind += ', its backbone.* keys'
    return state_dict, kind


def list_keys(keys, limit=6):
    """``a, b, c and 4 more``: state dict keys in a one-line message."""
    keys = list(keys)
    more = f' and {len(keys) - limit} more' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more
