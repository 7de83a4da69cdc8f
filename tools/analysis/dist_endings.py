"""Run RUNS consecutive two-process (gloo, CPU) train + test runs on small
generated data and check that every process group ends cleanly: exit 0 and
no "terminate called" abort. Not part of the test suite (minutes).

    python tools/analysis/dist_endings.py [--runs 20] [--work-dir DIR]

Each run: tools/dist_train.sh with the detection demo config for one epoch
(3 iterations per process), then tools/dist_test.sh on its checkpoint.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'configs/detection/demo/mask_rcnn_hire_tiny_synthetic.py'
ABORTS = ('terminate called', 'core dumped', 'Aborted')


def run(command, cwd, port):
    started = time.perf_counter()
    result = subprocess.run(
        ['bash', *map(str, command)], cwd=cwd, capture_output=True,
        text=True, env={**os.environ, 'PYTHON': sys.executable,
                        'PORT': str(port), 'PYTHONFAULTHANDLER': '1'})
    output = result.stdout + result.stderr
    aborted = [a for a in ABORTS if a in output]
    return result.returncode, aborted, time.perf_counter() - started, output


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=20)
    parser.add_argument('--work-dir', help='default: a temporary folder')
    args = parser.parse_args()
    from mmhire.datasets.synthetic import make_coco_shapes
    cwd = Path(args.work_dir or tempfile.mkdtemp(prefix='dist_endings_'))
    if not (cwd / 'data/synthetic_coco').is_dir():
        make_coco_shapes(cwd / 'data/synthetic_coco', num_train=12,
                         num_val=4)
    options = ['--cfg-options', 'train_cfg.max_epochs=1',
               'train_dataloader.batch_size=2', 'val_dataloader.batch_size=2',
               'model.test_cfg.rcnn.score_thr=0']
    failures = 0
    for i in range(args.runs):
        work_dir = f'work_dirs/run_{i}'
        train = run([ROOT / 'tools/dist_train.sh', CONFIG, 2, '--work-dir',
                     work_dir, *options], cwd, 29700 + 2 * i)
        test = run([ROOT / 'tools/dist_test.sh', CONFIG,
                    f'{work_dir}/epoch_1.pth', 2, '--work-dir', work_dir,
                    *options], cwd, 29701 + 2 * i)
        ok = all(code == 0 and not aborted for code, aborted, *_ in
                 (train, test))
        failures += not ok
        print(f'run {i + 1}/{args.runs}: train exit {train[0]} '
              f'({train[2]:.0f} s), test exit {test[0]} ({test[2]:.0f} s)'
              + ('' if ok else f'; FAILED {train[1] + test[1]}'), flush=True)
        if not ok:
            log = cwd / f'{work_dir}.failed.log'
            log.write_text(train[3] + '\n' + test[3])
            print(f'  output in {log}')
    print(f'{args.runs - failures} of {args.runs} train + test runs ended '
          'with exit 0 and no abort')
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
