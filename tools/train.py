"""Train a detector or segmentor with an mmdet or mmseg config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]]
                          [--amp] [--auto-scale-lr] [--cfg-options K=V ...]

The options are those of mmdet's and mmseg's tools/train.py. Several GPUs:
tools/dist_train.sh CONFIG GPUS. Without CUDA it runs on the CPU (and
dist_train.sh runs DDP over gloo).

SIGTERM (Slurm's preemption, scancel) or Ctrl-C finishes the iteration in
flight, saves it to work_dir/iter_N_preempted.pth and exits with status 75;
the same command with --resume continues from it (inside an epoch, at the
batch where it stopped). A second Ctrl-C stops at once.
"""
import argparse
import os.path as osp

from mmhire import preemption
from mmhire.checkpoint import newest_readable_checkpoint, safe_load
from mmhire.checks import check_data, check_fits, check_writable
from mmhire.engine import (add_common_args, build_runner, load_config,
                           tool_session, use_amp)
from mmhire.run_lock import claim_work_dir


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr to the actual total batch size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CHECKPOINT, or from the latest checkpoint in the '
        'work dir when none is given')
    return add_common_args(parser).parse_args()


def main():
    args = parse_args()
    with tool_session():
        cfg = load_config(args.config, args.cfg_options, args.work_dir,
                          args.launcher)
        if args.amp:
            use_amp(cfg)
        if args.auto_scale_lr:
            if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
                raise SystemExit('error: --auto-scale-lr needs '
                                 'auto_scale_lr.base_batch_size in the config')
            cfg.auto_scale_lr.enable = True
        if args.resume == 'auto':
            cfg.resume = True
            cfg.load_from = newest_readable_checkpoint(cfg.work_dir) \
                if osp.isdir(cfg.work_dir) else None
        elif args.resume is not None:
            cfg.resume, cfg.load_from = True, args.resume
        if cfg.get('load_from') and cfg.get('resume'):
            check_fits(cfg, cfg.load_from)  # and readable and safe
        elif cfg.get('load_from'):  # fine-tuning: it may fit in part
            safe_load(cfg.load_from)
        check_data(cfg, ['train_dataloader', 'val_dataloader']
                   if cfg.get('val_cfg') else ['train_dataloader'])
        check_writable(cfg.work_dir, '--work-dir')
        claim_work_dir(cfg.work_dir)
        preemption.enable(cfg)
        build_runner(cfg).train()


if __name__ == '__main__':
    main()
