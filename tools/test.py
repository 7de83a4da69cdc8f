"""Test (evaluate) a trained detector or segmentor.

    python tools/test.py CONFIG CHECKPOINT [--tta [--no-flip]] [--deploy]
                         [--out FILE|DIR] [--show-dir DIR] [--show]
                         [--work-dir DIR] [--cfg-options K=V ...]

A plain run evaluates at the single test scale; --tta evaluates with the
config's multi-scale (and flip) pipeline, as mmseg's test.py does (for a
detection config without one, mmdet's flip augmentation); --deploy tests
the backbone's deploy form (BatchNorms folded).

--out: detection, a .pkl file of the raw results (mmdet's DumpDetResults);
segmentation, a folder with one PNG of class indices per image (mmseg's).
--show-dir DIR: every test image drawn with its predictions beside its
ground truth (detection: DIR/NAME; segmentation, as mmseg:
DIR/vis_data/vis_image/). --show: the same in a window.

Several GPUs: tools/dist_test.sh CONFIG CHECKPOINT GPUS.
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from mmhire.checks import check_data, check_fits, check_writable
from mmhire.engine import (add_common_args, build_runner, load_config,
                           tool_session, use_tta)
from mmhire.errors import MMHireError
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
    parser.add_argument('--out', help='detection: a .pkl file of the raw '
                        'results; segmentation: a folder of class-index PNGs')
    parser.add_argument('--show-dir', help='draw every test image with its '
                        'predictions and ground truth into this folder')
    parser.add_argument('--show', action='store_true',
                        help='show the drawn images in a window')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds each image is shown with --show')
    return add_common_args(parser).parse_args()


def save_outputs(cfg, args):
    """--out, --show-dir and --show, as mmdet's and mmseg's test.py."""
    if args.show and not os.environ.get('DISPLAY') and sys.platform != \
            'win32':
        raise MMHireError('--show needs a display (DISPLAY is not set); '
                          'use --show-dir DIR to save the pictures instead.')
    if args.show or args.show_dir:
        hook = cfg.default_hooks.get('visualization')
        if hook is None:
            raise MMHireError('--show and --show-dir need the '
                              'visualization hook in default_hooks.')
        hook.update(draw=True, show=args.show, wait_time=args.wait_time)
        if args.show_dir:
            show_dir = osp.abspath(args.show_dir)  # not under the work dir
            if cfg.default_scope == 'mmdet':
                hook.test_out_dir = show_dir
            else:
                cfg.visualizer.save_dir = show_dir
        if cfg.default_scope == 'mmseg':
            hook.interval = 1  # mmseg draws every 50th image by default
    segmentation = cfg.default_scope == 'mmseg'
    if args.out and not segmentation and not args.out.endswith(
            ('.pkl', '.pickle')):
        raise MMHireError(f'--out {args.out!r}: detection results are '
                          'written as a .pkl file (name it results.pkl).')
    for option, path in (('--work-dir', cfg.work_dir),
                         ('--show-dir', args.show_dir)):
        check_writable(path, option)
    check_writable(args.out, '--out', folder=segmentation)
    if args.out and segmentation:
        cfg.test_evaluator.update(output_dir=osp.abspath(args.out),
                                  keep_results=True)


def main():
    args = parse_args()
    with tool_session():
        cfg = load_config(args.config, args.cfg_options, args.work_dir,
                          args.launcher)
        check_fits(cfg, args.checkpoint)
        cfg.load_from = args.checkpoint
        if args.tta:
            use_tta(cfg, flip=not args.no_flip)
        save_outputs(cfg, args)
        check_data(cfg, ['test_dataloader'])
        runner = build_runner(cfg)
        if args.out and cfg.default_scope == 'mmdet':
            from mmdet.evaluation import DumpDetResults
            runner.test_evaluator.metrics.append(
                DumpDetResults(out_file_path=args.out))
        if args.deploy:
            model = runner.model.module if is_model_wrapper(runner.model) \
                else runner.model
            runner.load_or_resume()  # fold the loaded weights, not fresh ones
            print_log(f'mmhire: {switch_to_deploy(model)} backbone(s) '
                      'switched to the deploy form', logger='current')
        runner.test()


if __name__ == '__main__':
    main()
