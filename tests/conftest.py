import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))

# A small network with every feature of the real ones: shifted and unshifted
# blocks, all three region sizes, padding at odd sizes.
TINY_ARCH = dict(depths=(2, 2, 3, 2), channels=(16, 32, 32, 64),
                 region_sizes=(4, 3, 3, 2), shift_sizes=(2, 2, 1, 1),
                 shift_periods=(2, 2, 3, 2))


@pytest.fixture
def tiny_arch():
    return dict(TINY_ARCH)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize_norms(model):
    """Give every BatchNorm non-trivial affine parameters and statistics, so
    that a mix-up of norms cannot go unnoticed."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def check_with_cp_matches(plain, x):
    """A ``with_cp`` copy of ``plain`` (in train mode) gives the same
    parameter gradients and updates the BatchNorm statistics once, not
    twice."""
    import copy
    checkpointed = copy.deepcopy(plain)
    checkpointed.with_cp = True
    for model in (plain, checkpointed):
        sum(o.square().mean() for o in model(x)).backward()
    for (name, a), b in zip(plain.named_parameters(),
                            checkpointed.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    for a, b in zip(plain.buffers(), checkpointed.buffers()):
        assert torch.equal(a, b)


def run_tool(args, cwd, env=None, check=True, timeout=600):
    """Run a tools/ script as a user would, from ``cwd``."""
    import os
    import subprocess
    script = str(ROOT / args[0])
    command = ['bash', script] if script.endswith('.sh') \
        else [sys.executable, script]
    result = subprocess.run(
        command + list(args[1:]), cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, 'PYTHON': sys.executable,
                              **(env or {})})
    if check and result.returncode:
        raise AssertionError(f'{args} failed:\n{result.stdout[-3000:]}\n'
                             f'{result.stderr[-3000:]}')
    return result


@pytest.fixture(scope='session')
def small_coco(tmp_path_factory):
    """A working directory with a small generated COCO at the demo's path."""
    from mmhire.datasets.synthetic import make_coco_shapes
    cwd = tmp_path_factory.mktemp('coco')
    make_coco_shapes(cwd / 'data/synthetic_coco', num_train=24, num_val=8)
    return cwd


@pytest.fixture(scope='session')
def small_ade(tmp_path_factory):
    """A working directory with a small generated ADE20K at the demo's path."""
    from mmhire.datasets.synthetic import make_ade_shapes
    cwd = tmp_path_factory.mktemp('ade')
    make_ade_shapes(cwd / 'data/synthetic_ade', num_train=16, num_val=4)
    return cwd
