"""Mixed and half precision on a GPU, every backbone beside mmdet's ResNet-50
and Swin-T, in one run (a few minutes on one GPU).

    python tools/analysis/gpu_precision.py [--size 800 1216] [--steps 10]
                                           [--deploy-size 1024]

For each backbone (mmhire's default dense size of each network):

* a training step as ``tools/train.py --amp`` takes it: batch 2, float16
  autocast, the loss scaled by a GradScaler, forward, backward and an SGD
  step; the median step time and the peak memory the step allocates;
* the deploy form (BatchNorms folded) as a ``.half()`` model: batch 1 at
  1024x1024, its median latency, and whether every output is finite.

On a machine without CUDA it runs the same on the CPU in bfloat16, which
only checks that the script works (``--size 64 64 --deploy-size 64
--steps 1``).
"""
import argparse
import copy
import statistics
import time

import torch
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope

from mmhire import ConvMLP, HireMLP, RepMLPNet, WaveMLP

NETWORKS = {
    'Hire-MLP-Small': lambda: HireMLP('small'),
    'ConvMLP-Small': lambda: ConvMLP('small'),
    'RepMLPNet-T256': lambda: RepMLPNet('T256'),
    'Wave-MLP-S': lambda: WaveMLP('S'),
    'ResNet-50 (mmdet)': lambda: MODELS.build(dict(type='ResNet', depth=50)),
    'Swin-T (mmdet)': lambda: MODELS.build(dict(type='SwinTransformer')),
}


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def median_time(step, device, steps):
    step()  # warm-up (cuDNN's algorithm search, allocator)
    times = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def amp_training(model, size, device, dtype, steps):
    model.to(device)
    model.train()  # mmdet's ResNet.train returns None
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type,
                                  enabled=dtype == torch.float16)
    x = torch.randn(2, 3, *size, device=device)

    def step():
        with torch.autocast(device.type, dtype=dtype):
            loss = sum(o.float().square().mean() for o in model(x))
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    seconds = median_time(step, device, steps)
    peak = (torch.cuda.max_memory_allocated() - before) / 2**20 \
        if device.type == 'cuda' else float('nan')
    return seconds, peak


def half_deploy(model, side, device, dtype, steps):
    model = copy.deepcopy(model)
    model.eval()
    if hasattr(model, 'switch_to_deploy'):
        model.switch_to_deploy()
    model = model.to(device, dtype)
    x = torch.randn(1, 3, side, side, device=device, dtype=dtype)
    with torch.no_grad():
        outs = model(x)
        seconds = median_time(lambda: model(x), device, steps)
    return seconds, all(bool(o.isfinite().all()) for o in outs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, nargs=2, default=[800, 1216],
                        metavar=('H', 'W'), help='training input size')
    parser.add_argument('--deploy-size', type=int, default=1024,
                        help='side of the deploy-form input')
    parser.add_argument('--steps', type=int, default=10)
    args = parser.parse_args()
    init_default_scope('mmdet')
    cuda = torch.cuda.is_available()
    device = torch.device('cuda' if cuda else 'cpu')
    dtype = torch.float16 if cuda else torch.bfloat16
    name = torch.cuda.get_device_name() if cuda else 'CPU (bfloat16 check)'
    print(f'{name}, torch {torch.__version__}; training: batch 2 at '
          f'{args.size[0]}x{args.size[1]}, {dtype} autocast; deploy form: '
          f'.to({dtype}), batch 1 at {args.deploy_size}x{args.deploy_size}; '
          f'medians of {args.steps}')
    print('| network | AMP step (s) | AMP step peak (MiB) | deploy '
          'latency (ms) | finite |')
    print('|---|---|---|---|---|')
    for label, build in NETWORKS.items():
        torch.manual_seed(0)
        model = build()
        try:
            step, peak = amp_training(model, args.size, device, dtype,
                                      args.steps)
            latency, finite = half_deploy(model, args.deploy_size, device,
                                          dtype, args.steps)
        except RuntimeError as e:  # e.g. mmdet's Swin under CPU autocast
            print(f'| {label} | failed: {str(e).splitlines()[0]} | | | |')
            continue
        print(f'| {label} | {step:.3f} | {peak:.0f} | {latency * 1e3:.1f} '
              f'| {"yes" if finite else "NO"} |', flush=True)
        del model
        if cuda:
            torch.cuda.empty_cache()


if __name__ == '__main__':
    main()
