"""Test (evaluate) a trained detector or segmentor.

    python tools/test.py CONFIG CHECKPOINT [--tta [--no-flip]]
                         [--work-dir DIR] [--cfg-options K=V ...]

A plain run evaluates at the single test scale; --tta evaluates with the
config's multi-scale (and flip) pipeline, as mmseg's test.py does.

Several GPUs: tools/dist_test.sh CONFIG CHECKPOINT GPUS.
"""
import argparse

from mmengine.config import DictAction
from mmengine.model import is_model_wrapper

from mmhire.checkpoint import check_fits
from mmhire.engine import (build_runner, check_data, clear_errors,
                           load_config, use_tta)


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--tta', action='store_true',
                        help='multi-scale (and flip) test-time augmentation')
    parser.add_argument('--no-flip', action='store_true',
                        help='with --tta: leave out the flipped pass')
    parser.add_argument('--work-dir', help='where to save the evaluation')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'])
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser.parse_args()


def main():
    args = parse_args()
    with clear_errors():
        cfg = load_config(args.config, args.cfg_options, args.work_dir,
                          args.launcher)
        cfg.load_from = args.checkpoint
        if args.tta:
            use_tta(cfg, flip=not args.no_flip)
        check_data(cfg, ['test_dataloader'])
        runner = build_runner(cfg)
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        check_fits(getattr(model, 'module', model), args.checkpoint)
        runner.test()


if __name__ == '__main__':
    main()
