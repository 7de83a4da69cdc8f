"""Write a clean mmhire checkpoint from a released file of any mmhire backbone.

    python tools/convert_checkpoint.py hire_mlp_small.pth hire_small_mmhire.pth [--ema]
    python tools/convert_checkpoint.py convmlp_s_imagenet.pth convmlp_s_mmhire.pth
    python tools/convert_checkpoint.py RepMLPNet-T224-train.pth repmlp_t224_mmhire.pth

The output holds only the backbone's tensors under mmhire's names (the
classifier's norm and head, the optimizer and the pickled training args are
dropped), so any PyTorch loads it with ``weights_only=True`` and no
allowlist. It loads with ``init_cfg=dict(type='Pretrained', checkpoint=DST)``.
"""
import argparse
import os
import os.path as osp
import sys

import torch

from mmhire.checkpoint import safe_load, unwrap_state_dict
from mmhire.checks import check_writable
from mmhire.errors import MMHireError
from mmhire.models import backbone_names, identify


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='released checkpoint (or any supported)')
    parser.add_argument('dst', help='where to write the mmhire checkpoint')
    parser.add_argument('--ema', action='store_true',
                        help="take the file's EMA weights (model_ema or "
                        'state_dict_ema)')
    args = parser.parse_args(argv)
    try:
        check_writable(args.dst, 'dst', folder=False)
        checkpoint = safe_load(args.src)
        found, kind = unwrap_state_dict(checkpoint, use_ema=args.ema)
    except MMHireError as e:
        sys.exit(f'error: {e}')
    match = identify(found)
    if match is None:
        sys.exit(f'error: {args.src!r} holds none of the backbones '
                 f'{", ".join(backbone_names())}.')
    network, state_dict, classifier, arch = match
    if classifier:
        kind = f'released ImageNet checkpoint, {kind}'
    weights = {'model', 'model_ema', 'state_dict', 'state_dict_ema'}
    dropped = sorted(set(checkpoint) - weights - set(state_dict)
                     - set(classifier))
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save({'state_dict': state_dict,
                'meta': dict(network=network.__name__,
                             arch=network.zoo_name(arch),
                             source=str(args.src), weights=kind)},
               args.dst)
    total = sum(v.numel() for v in state_dict.values()
                if v.is_floating_point())
    print(f'read {args.src} ({kind}); {network.paper_name}, arch '
          f'{network.zoo_name(arch)}')
    dropped += classifier
    print(f'wrote {args.dst}: {len(state_dict)} backbone tensors in mmhire '
          f'names, {total / 1e6:.3f}M values'
          + (f'; dropped {", ".join(dropped)}' if dropped else ''))


if __name__ == '__main__':
    main()
