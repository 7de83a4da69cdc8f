"""Parameters and FLOPs of a backbone or of a whole detection or
segmentation config, at a given input size, without the dataset.

    python tools/analysis/get_flops.py small --shape 224 224
    python tools/analysis/get_flops.py small --backbone ConvMLP
    python tools/analysis/get_flops.py configs/detection/mask_rcnn_hire_small_1x.py --shape 800 1216

FLOPs are counted as multiply-adds by mmengine's counter (the convention of
the paper's tables). A backbone is counted without its per-output norms;
``--deploy`` counts its deploy form (BatchNorms folded).
"""
import argparse
import logging
import os.path as osp

import torch
from mmengine.analysis import get_model_complexity_info
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope

from mmhire.checks import positive_int
from mmhire.engine import load_config, tool_session
from mmhire.errors import MMHireError
from mmhire.models import BACKBONES, backbone_names, switch_to_deploy


class DenseForward(torch.nn.Module):
    """A detector's or segmentor's forward on a bare image tensor, with the
    image metadata a detector needs made up from the input size."""

    def __init__(self, model, scope):
        super().__init__()
        self.model, self.scope = model, scope

    def forward(self, inputs):
        if self.scope == 'mmseg':
            return self.model(inputs, mode='tensor')
        from mmdet.structures import DetDataSample
        height, width = inputs.shape[2:]
        samples = [DetDataSample(metainfo=dict(
            img_shape=(height, width), ori_shape=(height, width),
            pad_shape=(height, width), scale_factor=(1., 1.)))
            for _ in range(inputs.shape[0])]
        return self.model(inputs, samples, mode='tensor')


def build(target, network):
    """``(model to count, its backbone, description)``."""
    if target.lower() in network.arch_zoo:
        backbone = network(target, out_norm=False)
        return backbone, backbone, f'{network.__name__} {target!r} backbone'
    if not osp.isfile(target):
        raise MMHireError(
            f'{target!r} is neither an arch of {network.__name__} '
            f'({", ".join(network.arch_zoo)}) nor a config file.')
    cfg = load_config(target)
    cfg.model.backbone.pop('init_cfg', None)  # no checkpoint needed to count
    init_default_scope(cfg.default_scope)
    registry = __import__(f'{cfg.default_scope}.registry',
                          fromlist=['MODELS']).MODELS
    model = registry.build(cfg.model)
    return (DenseForward(model, cfg.default_scope), model.backbone,
            osp.basename(target))


def count(model, shape):
    # The counter warns about every elementwise op and about modules whose
    # weights are used through views (the region MLPs' fc1); both are noise.
    logger = MMLogger.get_current_instance()
    level, _ = logger.level, logger.setLevel(logging.ERROR)
    try:
        info = get_model_complexity_info(
            model.eval(), inputs=(torch.zeros(1, 3, *shape), ),
            show_table=False, show_arch=False)
    finally:
        logger.setLevel(level)
    return info['params'], info['flops']


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('target', help='arch name or config file')
    parser.add_argument('--backbone', default='HireMLP',
                        choices=backbone_names(),
                        help='the network of an arch name')
    parser.add_argument('--shape', type=positive_int, nargs=2,
                        default=[224, 224],
                        metavar=('H', 'W'), help='input size')
    parser.add_argument('--deploy', action='store_true',
                        help='count the deploy form (BatchNorms folded)')
    args = parser.parse_args()
    with tool_session():
        network = next(b for b in BACKBONES if b.__name__ == args.backbone)
        model, backbone, name = build(args.target, network)
        if args.deploy:
            switch_to_deploy(model)
        rows = [(name, *count(model, args.shape))]
        if model is not backbone:
            rows.append(('  of which the backbone',
                         *count(backbone, args.shape)))
    print(f'input 1x3x{args.shape[0]}x{args.shape[1]}'
          + (', deploy form' if args.deploy else ''))
    for label, params, flops in rows:
        print(f'{label}: {params / 1e6:.3f}M parameters, '
              f'{flops / 1e9:.3f} GFLOPs')


if __name__ == '__main__':
    main()
