"""Export a trained segmentor, or a detector's backbone and neck, to ONNX.

    python tools/deployment/export_onnx.py CONFIG CHECKPOINT --out FILE
        [--shape H W] [--dynamic] [--deploy] [--fp16] [--opset N]

A segmentor is exported whole: input ``input``, the normalized batch as the
config's data_preprocessor leaves it (N x 3 x H x W), output ``logits``, the
class logits at the input's resolution (N x classes x H x W). A detector is
exported as its backbone and neck: outputs ``p0``, ``p1``, ... (its feature
pyramid); the heads and their post-processing stay with your deploy tool.

--shape: the traced input size (default: the segmentor's crop size, or
800x1344 for a detector). --dynamic: batch, height and width symbolic, one
file for every size. --deploy: the backbone's deploy form (BatchNorms
folded). --fp16: float16 weights and computation.

The file is then run in ONNX Runtime (at a second size too with --dynamic)
and compared with PyTorch in float32; a largest relative difference above
1e-4 (1e-2 with --fp16), or an output that is not finite, is an error and
the file is removed. Evaluate a segmentor's file with
tools/deployment/test_onnx.py.
"""
import argparse
import copy
import os
import os.path as osp

import torch
from mmengine.config import DictAction
from mmengine.registry import MODELS, init_default_scope

from mmhire.checks import check_fits, check_writable, model_class, \
    positive_int
from mmhire.deployment import (OPSET, TOLERANCE, export, exported_part,
                               kind_of, largest_difference, require_onnx,
                               session)
from mmhire.engine import load_config, tool_session
from mmhire.errors import ExportError
from mmhire.models import switch_to_deploy

DETECTION_SHAPE = (800, 1344)  # the (1333, 800) test scale, padded to 32


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', required=True, help='the .onnx file')
    parser.add_argument('--shape', nargs=2, type=positive_int,
                        metavar=('H', 'W'), help='the traced input size')
    parser.add_argument('--dynamic', action='store_true',
                        help='symbolic batch, height and width')
    parser.add_argument('--deploy', action='store_true',
                        help="the backbone's deploy form")
    parser.add_argument('--fp16', action='store_true',
                        help='float16 weights and computation')
    parser.add_argument('--opset', type=positive_int, default=OPSET,
                        help=f'ONNX opset (default {OPSET})')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args()


def default_shape(cfg, kind):
    size = (cfg.model.get('data_preprocessor') or {}).get('size')
    if kind == 'segmentor':
        return tuple(size) if size else (512, 512)
    return DETECTION_SHAPE


def build(cfg, checkpoint):
    """The config's model with the checkpoint's weights, in eval mode."""
    state_dict = check_fits(cfg, checkpoint)
    init_default_scope(cfg.get('default_scope') or 'mmengine')
    model = MODELS.build(cfg.model)
    model.load_state_dict(state_dict, strict=False)  # all of it fits
    return model.eval()


def main():
    args = parse_args()
    with tool_session():
        require_onnx()
        cfg = load_config(args.config, args.cfg_options)
        kind = kind_of(model_class(cfg, cfg.model))
        check_writable(args.out, '--out', folder=False)
        model = build(cfg, args.checkpoint)
        if args.deploy:
            print(f'mmhire: {switch_to_deploy(model)} backbone(s) switched '
                  'to the deploy form')
        part = exported_part(model)
        shape = tuple(args.shape or default_shape(cfg, kind))
        channels = getattr(model.backbone, 'in_channels', 3)
        # Batch 2: a traced batch of 1 would fix the batch size.
        example = torch.randn(2 if args.dynamic else 1, channels, *shape)
        dtype = torch.float16 if args.fp16 else torch.float32
        exported = copy.deepcopy(part).to(dtype) if args.fp16 else part
        export(exported, example.to(dtype), args.out, args.dynamic,
               args.opset)
        sizes = [example.shape]
        if args.dynamic:
            sizes.append((1, channels, shape[0] + 32, shape[1] + 64))
        sess, outputs = session(args.out), None
        for size in sizes:
            difference, finite, got = largest_difference(
                sess, part, torch.randn(size))
            outputs = outputs or got  # the traced shape's
            print(f'ONNX Runtime vs PyTorch (float32) at '
                  f'{"x".join(map(str, size))}: largest relative difference '
                  f'{difference:.1e}')
            if difference > TOLERANCE[dtype] or not finite:
                os.remove(args.out)
                problem = ('outputs that are not finite' if not finite else
                           f'a relative difference of {difference:.1e}, '
                           f'above {TOLERANCE[dtype]:.0e}')
                raise ExportError(
                    f'the exported file gives {problem} at '
                    f'{"x".join(map(str, size))}, so it was removed; '
                    'please report this with the config.')
        names = ', '.join(f'{name} {tuple(o.shape)}' for name, o in zip(
            [o.name for o in sess.get_outputs()], outputs))
        print(f'mmhire: wrote {args.out} ({osp.getsize(args.out) / 2**20:.1f} '
              f'MiB, {kind}, opset {args.opset}, {str(dtype)[6:]}'
              f'{", dynamic batch/height/width" if args.dynamic else ""}): '
              f'input {tuple(example.shape)}, outputs {names}')


if __name__ == '__main__':
    main()
