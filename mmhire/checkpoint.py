"""Safe checkpoint loading and conversion of the authors' released files.

Everything is read with ``torch.load(weights_only=True)``. Beyond tensors
and plain containers, exactly these pickled types are allowed:

* runner checkpoints written by mmengine (mmdet/mmseg/mmhire runs): its
  ``HistoryBuffer`` with the numpy arrays and scalars inside, and
  ``getattr`` narrowed to looking up HistoryBuffer's statistics methods,
  which is how they are pickled;
* released ImageNet checkpoints: additionally ``argparse.Namespace`` (their
  ``args``).

A file that needs anything else is refused, naming the type; nothing in a
checkpoint is ever executed.
"""
import argparse
import pickle
import re

import numpy as np
import torch
from mmengine.fileio import get_local_path
from mmengine.logging import HistoryBuffer, MMLogger

from mmhire.errors import CheckpointError

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
    (np._core.multiarray._reconstruct, 'numpy._core.multiarray._reconstruct'),
    (np._core.multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
    (np._core.multiarray.scalar, 'numpy._core.multiarray.scalar'),
    (np._core.multiarray.scalar, 'numpy.core.multiarray.scalar'),
]
RELEASED_GLOBALS = [argparse.Namespace]


def register_runner_globals():
    """Let mmengine's own ``torch.load`` calls (``--resume``, ``load_from``,
    ``test.py``) read the checkpoints mmengine writes, under
    ``weights_only=True``. Idempotent."""
    torch.serialization.add_safe_globals(RUNNER_GLOBALS)


def safe_load(filename):
    """``torch.load`` a checkpoint with ``weights_only=True`` and the
    allowlist above, onto the CPU."""
    register_runner_globals()
    # The context removes its entries on exit: give it only what it adds.
    scoped = [g for g in RELEASED_GLOBALS
              if g not in torch.serialization.get_safe_globals()]
    try:
        with get_local_path(filename) as path, \
                torch.serialization.safe_globals(scoped):
            return torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(
            f'checkpoint {filename!r} does not exist; check the path in '
            "init_cfg=dict(type='Pretrained', checkpoint=...) or on the "
            'command line.') from None
    except pickle.UnpicklingError as e:
        found = re.search(
            r"GLOBAL (\S+)|got <class '([^']+)'>|(getattr\(.*?\)) is not",
            str(e))
        culprit = next(g for g in found.groups() if g) if found else str(e)
        raise CheckpointError(
            f'refused to load {filename!r}: it holds a pickled {culprit}, '
            'which no weights file needs, so it was not unpickled and '
            'nothing in it ran. Re-save the weights as a plain state dict '
            '(torch.save(model.state_dict(), path)) where the file was '
            'made.') from None


_BLOCK_RENAMES = (
    ('attn.mlp_h1_norm.', 'hire.branch_h.norm.'),
    ('attn.mlp_h1.', 'hire.branch_h.fc1.'),
    ('attn.mlp_h2.', 'hire.branch_h.fc2.'),
    ('attn.mlp_w1_norm.', 'hire.branch_w.norm.'),
    ('attn.mlp_w1.', 'hire.branch_w.fc1.'),
    ('attn.mlp_w2.', 'hire.branch_w.fc2.'),
    ('attn.mlp_c.', 'hire.fc_c.'),
    ('attn.', 'hire.'),
    ('mlp.', 'ffn.'),
)


def official_to_mmhire(key):
    """mmhire's name for a key of a released checkpoint; ``None`` for the
    classifier's final norm and head, which a backbone does not have."""
    if key.startswith(('norm.', 'head.')):
        return None
    m = re.fullmatch(r'patch_embed\.(proj|norm)\.(.+)', key)
    if m:
        return f"stem.{'conv' if m[1] == 'proj' else 'bn'}.{m[2]}"
    m = re.fullmatch(r'network\.(\d+)\.(.+)', key)
    if not m:
        return key
    index, rest = int(m[1]), m[2]
    if index % 2:  # downsampling layer between stage index//2 and the next
        layer, tail = rest.split('.', 1)
        layer = {'proj': 'conv', 'norm': 'bn'}.get(layer, layer)
        return f'downsamples.{index // 2}.{layer}.{tail}'
    block, rest = rest.split('.', 1)
    for old, new in _BLOCK_RENAMES:
        if rest.startswith(old):
            rest = new + rest[len(old):]
            break
    return f'stages.{index // 2}.{block}.{rest}'


def is_official(state_dict):
    return any(k.startswith(('network.', 'patch_embed.')) for k in state_dict)


def backbone_state_dict(checkpoint, use_ema=False):
    """The backbone's tensors, in mmhire's names, from any supported file.

    Returns ``(state_dict, description)``. Accepts a released checkpoint
    (``model`` / ``model_ema``), an mmengine checkpoint (``state_dict``,
    keys possibly under ``backbone.`` as in a detector or segmentor), or a
    bare state dict.
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'a checkpoint must be a dict, got '
                              f'{type(checkpoint).__name__}.')
    if use_ema:
        if 'model_ema' not in checkpoint:
            raise CheckpointError(
                'use_ema=True, but the checkpoint has no model_ema entry '
                f'(its keys: {sorted(checkpoint)[:8]}).')
        state_dict, kind = checkpoint['model_ema'], 'EMA weights'
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
        kind += ' of a detector/segmentor'
    if is_official(state_dict):
        state_dict = {official_to_mmhire(k): v for k, v in state_dict.items()}
        state_dict.pop(None, None)
        kind = f'released ImageNet checkpoint, {kind}'
    return state_dict, kind


def arch_of(state_dict):
    """Depths and channels of the network whose tensors these are."""
    depths, channels = [0] * 4, [0] * 4
    for key, value in state_dict.items():
        m = re.match(r'stages\.(\d)\.(\d+)\.norm1\.weight$', key)
        if m:
            stage = int(m[1])
            depths[stage] = max(depths[stage], int(m[2]) + 1)
            channels[stage] = value.shape[0]
    return dict(depths=tuple(depths), channels=tuple(channels))


def describe_arch(arch):
    from mmhire.models import HireMLP
    for name, zoo in HireMLP.arch_zoo.items():
        if all(tuple(zoo[k]) == tuple(v) for k, v in arch.items()):
            return repr(name)
    return f"depths={arch['depths']}, channels={arch['channels']}"


def _short(keys, limit=6):
    keys = list(keys)
    more = f' and {len(keys) - limit} more' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def load_pretrained(backbone, filename, use_ema=False):
    """Load a checkpoint into a ``HireMLP`` and log one line saying what was
    loaded. Shapes that do not fit, or a file that would leave most of the
    backbone uninitialised, are errors."""
    state_dict, kind = backbone_state_dict(safe_load(filename), use_ema)
    expected = backbone.state_dict()
    out_norms = tuple(f'norm{i}.' for i in range(4))

    mismatched = [k for k in state_dict
                  if k in expected and state_dict[k].shape != expected[k].shape]
    file_arch, model_arch = arch_of(state_dict), arch_of(expected)
    if mismatched or (any(file_arch['depths']) and file_arch != model_arch):
        example = ''
        if mismatched:
            k = mismatched[0]
            example = (f'; e.g. {k} is {tuple(state_dict[k].shape)} in the '
                       f'file, {tuple(expected[k].shape)} in the model')
        raise CheckpointError(
            f'{filename!r} does not fit this backbone: the file holds arch '
            f'{describe_arch(file_arch)}, the backbone is '
            f'{describe_arch(model_arch)}{example}. Set arch to match.')

    body = [k for k in expected if not k.startswith(out_norms)]
    missing = [k for k in body if k not in state_dict]
    if len(missing) * 2 > len(body):
        raise CheckpointError(
            f'{filename!r} would leave {len(missing)} of the backbone\'s '
            f'{len(body)} tensors uninitialised: it is not a Hire-MLP '
            f'checkpoint of this arch (its first keys: '
            f'{_short(state_dict, 4)}).')

    loaded = {k: v for k, v in state_dict.items() if k in expected}
    backbone.load_state_dict(loaded, strict=False)
    fresh = sorted({k.split('.')[0] for k in expected
                    if k.startswith(out_norms) and k not in state_dict})
    ignored = [k for k in state_dict if k not in expected]
    message = (f'HireMLP: loaded {len(loaded)} tensors from {filename} '
               f'({kind}); ')
    message += (f'backbone tensors not in the file: {_short(missing)}'
                if missing else 'no backbone tensor missing')
    if fresh:
        message += f'; fresh per-output norms: {", ".join(fresh)}'
    if ignored:
        message += f'; ignored, not in this backbone: {_short(ignored)}'
    MMLogger.get_current_instance().info(message)
    return message


def check_fits(model, filename):
    """Refuse, before testing, a checkpoint that would leave part of the
    model as built (mmengine only warns and tests a half-loaded model)."""
    checkpoint = safe_load(filename)
    state_dict = checkpoint.get('state_dict', checkpoint) \
        if isinstance(checkpoint, dict) else {}
    state_dict = {k.removeprefix('module.'): v for k, v in state_dict.items()}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    mismatched = [k for k in expected if k in state_dict
                  and state_dict[k].shape != expected[k].shape]
    if missing or mismatched:
        problems = []
        if missing:
            problems.append(f'{len(missing)} tensors missing ({_short(missing, 3)})')
        if mismatched:
            k = mismatched[0]
            problems.append(
                f'{len(mismatched)} of another shape (e.g. {k}: '
                f'{tuple(state_dict[k].shape)} in the file, '
                f'{tuple(expected[k].shape)} in the model)')
        raise CheckpointError(
            f'{filename!r} does not fit the model of this config: '
            f'{"; ".join(problems)}. Use the checkpoint that this config '
            'trained.')
