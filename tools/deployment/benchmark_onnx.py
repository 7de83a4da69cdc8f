"""Latency of a backbone's deploy form in PyTorch beside its ONNX file in
ONNX Runtime (float32 and float16), measured side by side in one process.

    python tools/deployment/benchmark_onnx.py [--network HireMLP]
        [--arch small] [--shape 800 1216] [--rounds 5] [--threads 2]

Batch 1, random weights (latency does not depend on them), fixed-size
files. Each round times every model once (the median of --runs calls after
a warm-up call), in turn, so that a busy spell of the machine falls on all
of them; medians over the rounds, ratios against PyTorch.
"""
import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mmhire.deployment import export, require_onnx, run, session
from mmhire.models import BACKBONES, backbone_names, switch_to_deploy


def timed(call, runs):
    call()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--network', default='HireMLP',
                        choices=backbone_names())
    parser.add_argument('--arch', default='small')
    parser.add_argument('--shape', nargs=2, type=int, default=(800, 1216))
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    require_onnx()
    torch.set_num_threads(args.threads)
    network = next(c for c in BACKBONES if c.__name__ == args.network)
    backbone = network(args.arch).eval()
    switch_to_deploy(backbone)
    x = torch.randn(1, 3, *args.shape)
    models = {}
    with tempfile.TemporaryDirectory() as folder:
        for dtype in (torch.float32, torch.float16):
            path = Path(folder) / f'{dtype}.onnx'
            export(copy.deepcopy(backbone).to(dtype), x.to(dtype), path)
            sess = session(path, threads=args.threads)
            models[f'ONNX Runtime, {str(dtype)[6:]}'] = (
                lambda sess=sess: run(sess, x))
    with torch.no_grad():
        models = {'PyTorch deploy form, float32': lambda: backbone(x),
                  **models}
        times = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, call in models.items():
                times[name].append(timed(call, args.runs))
    base = statistics.median(times['PyTorch deploy form, float32'])
    print(f'{args.network} {args.arch}, deploy form, batch 1 at '
          f'{args.shape[0]}x{args.shape[1]}, {args.threads} threads, '
          f'{torch.__version__}:')
    print('| model | latency (ms) | vs PyTorch |\n|---|---|---|')
    for name, values in times.items():
        median = statistics.median(values)
        print(f'| {name} | {median * 1e3:.0f} | {median / base:.2f}x |')


if __name__ == '__main__':
    main()
