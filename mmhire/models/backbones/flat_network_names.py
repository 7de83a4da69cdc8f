"""The names of the released checkpoints of Hire-MLP and Wave-MLP (one code
base): a stem ``patch_embed`` (``proj``, ``norm``), then a flat ``network``
list of stage 0, downsampler 0, stage 1, ..., stage 3 (downsamplers with
``proj`` and ``norm``), then the classifier's ``norm`` and ``head``. mmhire
names the same layers ``stem``, ``downsamples.i`` and ``stages.i`` (``conv``
and ``bn``)."""
import re

_EMBED_LAYERS = {'proj': 'conv', 'norm': 'bn'}


def released_to_mmhire(state_dict, block_renames=()):
    """``(state_dict in mmhire's names, the classifier's keys left out)`` of
    a state dict in these names; a state dict without them comes back as it
    is. ``block_renames``: ``(old prefix, new prefix)`` pairs for the keys
    inside a block, the first that matches applies."""
    if not any(k.startswith(('network.', 'patch_embed.')) for k in state_dict):
        return state_dict, []
    converted, dropped = {}, []
    for key, value in state_dict.items():
        new = _mmhire_name(key, block_renames)
        if new is None:
            dropped.append(key)
        else:
            converted[new] = value
    return converted, dropped


def _mmhire_name(key, block_renames):
    if key.startswith(('norm.', 'head.')):
        return None
    m = re.fullmatch(r'patch_embed\.(proj|norm)\.(.+)', key)
    if m:
        return f'stem.{_EMBED_LAYERS[m[1]]}.{m[2]}'
    m = re.fullmatch(r'network\.(\d+)\.(.+)', key)
    if not m:
        return key
    index, rest = int(m[1]), m[2]
    if index % 2:  # the downsampler between stage index // 2 and the next
        layer, tail = rest.split('.', 1)
        return f'downsamples.{index // 2}.{_EMBED_LAYERS.get(layer, layer)}.' \
            f'{tail}'
    block, rest = rest.split('.', 1)
    for old, new in block_renames:
        if rest.startswith(old):
            rest = new + rest[len(old):]
            break
    return f'stages.{index // 2}.{block}.{rest}'
