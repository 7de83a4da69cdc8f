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
