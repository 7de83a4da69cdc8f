"""Side-by-side speed and memory of one of mmhire's backbones and their
peers, backbone only.

    python tools/analysis/benchmark.py [--arch small] [--rounds 3] [--runs 3]
    python tools/analysis/benchmark.py --network conv_mlp [--arch small]
    python tools/analysis/benchmark.py --network repmlp_net [--arch D256]
    python tools/analysis/benchmark.py --network wave_mlp [--arch S]

Each model is timed in processes of its own, as it runs when deployed: in
a process shared with other models, glibc's allocator (whose mmap
threshold follows the sizes freed so far) hands a model memory that an
earlier model paged in, which moved figures here by up to 40%. Rounds over
all models, each with a fresh process per model and task, spread a busy
spell of the machine over all of them. ``--keep-freed-memory`` runs them
with glibc keeping freed memory, where no run after the first pays page
faults for fresh memory: the other end of what an allocator can do.

* latency: batch 1 at 800x1216 (RepMLPNet: 512x1024, the Cityscapes crop,
  on the *256 variants, 448x896 on the *224 ones: the reference pads
  nothing), eval mode, no grad;
* training step: batch 2 at 512x512, train mode, forward and backward;
  its peak memory is how far the first step raises the resident set above
  what the model and its input hold (Linux only; a later step can reuse
  memory the allocator kept, so the first step is the one comparable
  across models);
* the machine's fp32 matmul rate and the fraction of it each model reaches
  (the FLOPs of its matmuls and convolutions, as torch's FlopCounterMode
  counts them, over its latency).

Models: mmhire's backbone (training form, the same with gradient
checkpointing for the training step, and deploy form), the
straightforward reference in the authors' layout
(reference/*.py; for RepMLPNet also its deploy form, after the
authors' locality_injection), and mmdet's ResNet-50, Swin-T and PVT-Small.
Medians over all rounds; ratios against the reference.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TRAIN_SHAPE = (2, 3, 512, 512)
DEFAULT_ARCHS = dict(hire_mlp='small', conv_mlp='small', repmlp_net='D256',
                     wave_mlp='S')


def latency_shape(network, arch):
    if network == 'repmlp_net':
        side = 2 * int(arch[1:])  # two FC patches high, four wide
        return (1, 3, side, 2 * side)
    return (1, 3, 800, 1216)


class Features(torch.nn.Module):
    """The reference's four maps, as a backbone returns them."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, x):
        return tuple(self.network.dense_maps(x))


def build_models(network, arch, only=None):
    """Name -> freshly initialised backbone (all, or just ``only``)."""
    from mmdet.models.backbones import (PyramidVisionTransformer, ResNet,
                                        SwinTransformer)
    from reference.conv_mlp import ReferenceConvMLP
    from reference.hire_mlp import ReferenceHireMLP
    from reference.repmlp_net import ReferenceRepMLPNet
    from reference.wave_mlp import ReferenceWaveMLP

    from mmhire.models import (ConvMLP, HireMLP, RepMLPNet, WaveMLP,
                               switch_to_deploy)

    backbone, reference = dict(
        hire_mlp=(HireMLP, ReferenceHireMLP),
        conv_mlp=(ConvMLP, ReferenceConvMLP),
        repmlp_net=(RepMLPNet, lambda arch: ReferenceRepMLPNet(
            arch.upper(), restore='corrected')),
        wave_mlp=(WaveMLP, ReferenceWaveMLP))[network]

    def deployed():
        model = backbone(arch, out_norm=False)
        switch_to_deploy(model)
        return model

    def reference_deployed():
        model = reference(arch).eval()
        model.locality_injection()
        return Features(model)

    label = f'{backbone.paper_name}-{arch.capitalize()}'
    factories = {
        f'{label} reference': lambda: Features(reference(arch)),
        **({f'{label} reference deploy': reference_deployed}
           if network == 'repmlp_net' else {}),
        f'{label} mmhire': lambda: backbone(arch, out_norm=False),
        f'{label} mmhire with_cp': lambda: backbone(arch, out_norm=False,
                                                    with_cp=True),
        f'{label} mmhire deploy': deployed,
        'ResNet-50 (mmdet)': lambda: ResNet(depth=50),
        'Swin-T (mmdet)': SwinTransformer,
        'PVT-Small (mmdet)': lambda: PyramidVisionTransformer(
            num_layers=[3, 4, 6, 3]),
    }
    return {name: make() for name, make in factories.items()
            if only is None or name == only}


def matmul_gflops(runs, n=2048):
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def flops(model, shape):
    """FLOPs of the matmuls and convolutions of one forward (with autograd
    on, so that mmhire takes its unfused path, which the counter knows)."""
    from torch.utils.flop_counter import FlopCounterMode
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(shape))
    return counter.get_total_flops()


def infer(model, x):
    with torch.no_grad():
        model(x)


def train_step(model, x):
    outs = model(x)
    sum(o.float().mean() for o in outs).backward()
    model.zero_grad(set_to_none=True)


def _status(field):
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024  # kB -> MiB


def measure(network, arch, name, task, runs):
    """In this (fresh) process: seconds of ``runs`` latency runs or training
    steps after one warm-up, and for training, by how many MiB the first
    step raised the resident set (Linux only)."""
    model = build_models(network, arch, only=name)[name]
    if task == 'latency':
        model.eval()
        step, x = infer, torch.randn(latency_shape(network, arch))
    else:
        model.train()
        step, x = train_step, torch.randn(TRAIN_SHAPE)
    memory = None
    if task == 'train':
        Path('/proc/self/clear_refs').write_text('5')  # reset the peak
        before = _status('VmRSS')
        step(model, x)
        memory = _status('VmHWM') - before
    else:
        step(model, x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step(model, x)
        times.append(time.perf_counter() - start)
    return dict(times=times, memory=memory)


# glibc keeps freed memory instead of returning it to the OS (and mmaps no
# block), so that no large tensor is paged in afresh after the first run.
KEEP_FREED_MEMORY = dict(MALLOC_MMAP_THRESHOLD_=str(2**32),
                         MALLOC_TRIM_THRESHOLD_=str(2**36))


def in_fresh_process(args, name, task):
    env = dict(os.environ, **(KEEP_FREED_MEMORY if args.keep_freed_memory
                              else {}))
    result = subprocess.run(
        [sys.executable, __file__, '--network', args.network, '--arch',
         args.arch, '--threads',
         str(args.threads), '--runs', str(args.runs), '--measure', name,
         '--task', task], capture_output=True, text=True, check=True,
        env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--network', choices=list(DEFAULT_ARCHS),
                        default='hire_mlp')
    parser.add_argument('--arch', help='default: small (Hire-MLP, ConvMLP), '
                        'D256 (RepMLPNet), S (Wave-MLP)')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--runs', type=int, default=3,
                        help='timed runs per model and round')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--keep-freed-memory', action='store_true',
                        help="tell glibc's allocator to keep freed memory, "
                        'so that no run pays page faults for fresh memory')
    parser.add_argument('--json', help='also write the figures here')
    parser.add_argument('--measure', help=argparse.SUPPRESS)
    parser.add_argument('--task', help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.arch = args.arch or DEFAULT_ARCHS[args.network]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.measure:
        print(json.dumps(measure(args.network, args.arch, args.measure,
                                 args.task, args.runs)))
        return

    models = build_models(args.network, args.arch)
    peak = matmul_gflops(7)
    shape = latency_shape(args.network, args.arch)
    work = {name: flops(model, shape) for name, model in models.items()
            if 'with_cp' not in name}
    names = list(models)
    tasks = [(name, 'latency') for name in work] + [
        (name, 'train') for name in models if 'deploy' not in name]
    del models
    samples = {task: dict(times=[], memory=[]) for task in tasks}
    for _ in range(args.rounds):  # rounds spread a busy spell over all
        for task in tasks:
            result = in_fresh_process(args, *task)
            samples[task]['times'] += result['times']
            samples[task]['memory'].append(result['memory'])
    latency, step, memory = {}, {}, {}
    for (name, task), s in samples.items():
        if task == 'latency':
            latency[name] = statistics.median(s['times'])
        else:
            step[name] = statistics.median(s['times'])
            memory[name] = statistics.median(s['memory'])

    reference = next(iter(work))
    allocator = ('keeping freed memory' if args.keep_freed_memory else
                 'default')
    print(f'torch {torch.__version__}, {args.threads} threads; fp32 matmul '
          f'{peak:.0f} GFLOP/s; glibc allocator {allocator}; each model in '
          f'its own processes, medians of {args.rounds} rounds x {args.runs} '
          f'runs\n')
    size = f'{shape[2]}x{shape[3]}'
    print(f'| backbone | GFLOPs @{size} | latency 1x{size} (s) | speed-up '
          'vs reference | matmul rate reached | train step 2x512x512 (s) | '
          'speed-up vs reference | peak memory of the step (MiB) | vs '
          'reference |')
    print('|---|---|---|---|---|---|---|---|---|')
    rows = {}
    for name in names:
        r = rows[name] = dict(step=step.get(name), memory=memory.get(name))
        if name in latency:
            r.update(gflops=work[name] / 1e9, latency=latency[name],
                     latency_speedup=latency[reference] / latency[name],
                     matmul_fraction=work[name] / latency[name] / 1e9 / peak)
        infer_cells = ('| - | - | - | - ' if name not in latency else
                       f"| {r['gflops']:.0f} | {r['latency']:.2f} | "
                       f"{r['latency_speedup']:.2f}x | "
                       f"{100 * r['matmul_fraction']:.0f}% ")
        train_cells = ('| - | - | - | - |' if r['step'] is None else
                       f"| {r['step']:.2f} | {step[reference] / r['step']:.2f}x"
                       f" | {r['memory']:.0f} | "
                       f"{r['memory'] / memory[reference]:.2f}x |")
        print(f'| {name} ' + infer_cells + train_cells)
    if args.json:
        Path(args.json).write_text(json.dumps(
            dict(matmul_gflops=peak, threads=args.threads, rounds=args.rounds,
                 keep_freed_memory=args.keep_freed_memory,
                 runs=args.runs, models=rows), indent=1))


if __name__ == '__main__':
    main()
