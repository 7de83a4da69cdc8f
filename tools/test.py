"""Test (evaluate) a trained detector or segmentor.

    python tools/test.py CONFIG CHECKPOINT [--tta [--no-flip]] [--deploy]
                         [--work-dir DIR] [--cfg-options K=V ...]

A plain run evaluates at the single test scale; --tta evaluates with the
config's multi-scale (and flip) pipeline, as mmseg's test.py does;
--deploy tests the backbone's deploy form (BatchNorms folded).

Several GPUs: tools/dist_test.sh CONFIG CHECKPOINT GPUS.
"""
import argparse

from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from mmhire.checkpoint import check_fits, check_readable
from mmhire.engine import (add_common_args, build_runner, check_data,
                           load_config, tool_session, use_tta)
from mmhire.models import switch_to_deploy


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--tta', action='store_true',
                        help='multi-scale (and flip) test-time augmentation')
    parser.add_argument('--no-flip', action='store_true',
                        help='with --tta: leave out the flipped pass')
    parser.add_argument('--deploy', action='store_true',
                        help="fold the backbone's BatchNorms for inference")
    return add_common_args(parser).parse_args()


def main():
    args = parse_args()
    with tool_session():
        check_readable(args.checkpoint)
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
        if args.deploy:
            runner.load_or_resume()  # fold the loaded weights, not fresh ones
            print_log(f'mmhire: {switch_to_deploy(model)} backbone(s) '
                      'switched to the deploy form', logger='current')
        runner.test()


if __name__ == '__main__':
    main()
