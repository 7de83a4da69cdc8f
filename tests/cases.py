"""One tiny arch per backbone, in one place: what the backbone contract test
(test_contract.py) needs to run on a backbone. A backbone that mmhire
registers without a case here fails the contract test, naming this file."""
from typing import Callable, NamedTuple

from reference.conv_mlp import ReferenceConvMLP
from reference.hire_mlp import ReferenceHireMLP
from reference.repmlp_net import ReferenceRepMLPNet
from reference.wave_mlp import ReferenceWaveMLP


class Case(NamedTuple):
    arch: dict  # a small network with every feature of the real ones
    # The authors' network of that arch (their names, with the classifier;
    # ``dense_maps(x)`` gives the four maps): its state dict is a released
    # file.
    reference: Callable
    size: tuple = (97, 131)  # an input the reference takes
    kwargs: dict = {}  # constructor arguments that make the maps the
    # reference's (no fresh per-output norms)
    module: str = 'mmhire'  # what a config's custom_imports names


HIRE_MLP = dict(depths=(2, 2, 3, 2), channels=(16, 32, 32, 64),
                region_sizes=(4, 3, 3, 2), shift_sizes=(2, 2, 1, 1),
                shift_periods=(2, 2, 3, 2))
CONV_MLP = dict(stem_channels=16, conv_blocks=1, depths=(2, 3, 1),
                channels=(16, 32, 48), mlp_ratios=(2, 2, 1.5))
# One FC patch covers the same 64x64 window at every stage, as 256 in the
# released *256 variants; every stage has several channel groups.
REPMLP_NET = dict(depths=(1, 1, 2, 1), channels=(8, 16, 32, 64),
                  patch_sizes=(16, 8, 4, 2), sharesets=(1, 2, 4, 8))
# The BatchNorm kind with 1x1 phase convolutions (T): every fold of the
# deploy form.
WAVE_MLP = dict(depths=(1, 2, 1, 1), channels=(8, 16, 16, 32),
                mlp_ratios=(4, 4, 2, 2), group_norm=False, dw_theta=False,
                embed_norm=True)

CASES = {
    'HireMLP': Case(
        HIRE_MLP, lambda: ReferenceHireMLP(
            (HIRE_MLP['depths'], HIRE_MLP['channels'])),
        kwargs=dict(out_norm=False)),
    'ConvMLP': Case(CONV_MLP, lambda: ReferenceConvMLP(
        tuple(CONV_MLP.values()))),
    # The authors' code takes whole patches only, and restores them in the
    # right order only where each map is one patch (see test_repmlp_net).
    'RepMLPNet': Case(REPMLP_NET, lambda: ReferenceRepMLPNet(
        tuple(REPMLP_NET.values()), restore='corrected'), size=(64, 128)),
    'WaveMLP': Case(WAVE_MLP, lambda: ReferenceWaveMLP(
        tuple(WAVE_MLP.values())), kwargs=dict(out_norm=False)),
}
