"""Wave-MLP: the released network exactly (against an independent
transcription of the authors' code, their dense path included, in float64
forward and backward), their files in every container, the phase branches'
grouping, the deploy form of each norm kind, and what the arch means here.
The contract every backbone meets is in test_contract.py."""
import argparse
import copy

import pytest
import torch
import torch.nn as nn
from cases import WAVE_MLP as TINY
from conftest import max_relative_error, pretrained, randomize_norms
from mmengine.analysis import get_model_complexity_info
from reference.wave_mlp import ReferenceWaveMLP

from mmhire.checkpoint import CheckpointError
from mmhire.errors import ArchError
from mmhire.models import WaveMLP
from mmhire.models.backbones.wave_mlp import PATM

# Classifier parameters without its final norm and head, as released.
PARAMS = {'T_dw': 14_772_448, 'T': 16_679_136, 'S': 30_194_016,
          'M': 43_542_608, 'B': 62_815_824}
# mmengine's counter at 224x224 (the authors report 2.1, 2.4, 4.5, 7.9).
FLOPS = {'T_dw': 2.171, 'T': 2.469, 'S': 4.543, 'M': 7.903, 'B': 10.247}


def realistic(reference):
    """Non-trivial norms of both kinds."""
    randomize_norms(reference)
    for m in reference.modules():
        if isinstance(m, nn.GroupNorm):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return reference


def training_file(path, reference, prefix=''):
    """What timm's training script writes, as the authors' releases."""
    weights = {prefix + k: v for k, v in reference.state_dict().items()}
    torch.save({'epoch': 299, 'arch': 'WaveMLP_T', 'state_dict': weights,
                'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-3}]},
                'version': 2, 'args': argparse.Namespace(model='WaveMLP_T',
                                                         lr=1e-3),
                'amp_scaler': {'scale': 65536.0, 'growth_factor': 2.0},
                'metric': 80.9,
                'state_dict_ema': {k: v + 1 if v.is_floating_point() else v
                                   for k, v in weights.items()}}, path)


@pytest.mark.real_size
@pytest.mark.parametrize('arch', list(PARAMS))
def test_parameters_are_the_released_networks_plus_four_map_norms(arch):
    model = WaveMLP(arch)
    channels = model.arch['channels']
    assert sum(p.numel() for p in model.parameters()) == \
        PARAMS[arch] + 2 * sum(channels)
    assert sum(p.numel() for p in WaveMLP(
        arch, norm_first_map=False).parameters()) == \
        PARAMS[arch] + 2 * sum(channels[1:])
    info = get_model_complexity_info(
        WaveMLP(arch, out_norm=False).eval(),
        inputs=(torch.zeros(1, 3, 224, 224), ), show_table=False,
        show_arch=False)
    assert round(info['flops'] / 1e9, 3) == FLOPS[arch]


@pytest.mark.real_size
@pytest.mark.parametrize('arch', ['T_dw', 'T', 'S', 'M'])
def test_released_file_gives_the_authors_dense_path_in_float64(tmp_path,
                                                               arch):
    torch.manual_seed(0)
    reference = realistic(ReferenceWaveMLP(arch)).double()
    training_file(tmp_path / f'WaveMLP_{arch}.pth.tar', reference, 'module.')
    dense = realistic(ReferenceWaveMLP(arch, fork_norms=True)).double()
    dense.load_state_dict(reference.state_dict(), strict=False)
    model = pretrained(WaveMLP, arch, tmp_path / f'WaveMLP_{arch}.pth.tar')
    model.double()
    for i in range(4):  # the dense path's fresh norms, in both
        getattr(model, f'norm{i}').load_state_dict(
            getattr(dense, f'norm{2 * i}').state_dict())
    for size in [(97, 131), (33, 65)]:
        x = torch.randn(1, 3, *size, dtype=torch.float64)
        with torch.no_grad():
            assert max_relative_error(model.eval()(x),
                                      dense.eval().dense_maps(x)) < 1e-10
    x = torch.randn(2, 3, 33, 65, dtype=torch.float64)
    for network, outs in ((model, model.train()(x)),
                          (dense, dense.train().dense_maps(x))):
        sum((o * o).mean() for o in outs).backward()
    assert max_relative_error(model(x), dense.dense_maps(x)) < 1e-10
    grads = WaveMLP.from_released({k: p.grad for k, p in
                                   dense.named_parameters()
                                   if not k.startswith('norm')})[0]
    ours = dict(model.named_parameters())
    # Every weight's gradient within 1e-10 of its size. A bias in front of
    # a training-mode BatchNorm (the phase convolutions', or before a map's
    # norm) has a gradient of zero, or of cancellation residue, where
    # summation order alone makes relative differences: biases are compared
    # to the largest gradient.
    largest = max(g.abs().max() for g in grads.values())
    assert max(((ours[k].grad - g).abs().max() / (
        g.abs().max() if k.endswith('weight') else largest)).item()
        for k, g in grads.items()) < 1e-10


def test_phase_branches_pair_two_channels_of_one_part():
    """Output channel g of tfc_h reads the cosine parts of channels 2g and
    2g + 1 (g < C/2), then the sine parts: not channel g's cosine and
    sine."""
    attn = PATM(4, False, dict(type='BN')).eval()
    with torch.no_grad():
        for conv in attn.norm_consumers():
            conv.weight.zero_()
        attn.fc_h.weight.copy_(torch.eye(4)[:, :, None, None])
        attn.theta_h_conv[0].bias.fill_(0.3)  # phase 0.3 everywhere
        attn.tfc_h.weight.zero_()
        attn.tfc_h.weight[:, 0, 0, 3] = 1  # the first input of each group
        x = torch.randn(1, 4, 5, 9)
        theta = torch.relu(attn.theta_h_conv[1](torch.full_like(x, 0.3)))
        h = attn.tfc_h(torch.cat([x * theta.cos(), x * theta.sin()], 1))
        assert torch.allclose(h[:, 0], x[:, 0] * theta[:, 0].cos())
        assert torch.allclose(h[:, 1], x[:, 2] * theta[:, 2].cos())
        assert torch.allclose(h[:, 2], x[:, 0] * theta[:, 0].sin())
        assert torch.allclose(h[:, 3], x[:, 2] * theta[:, 2].sin())


def test_ema_weights_and_every_container(tmp_path):
    reference = realistic(ReferenceWaveMLP(tuple(TINY.values())))
    for name, container in [
            ('bare.pth', reference.state_dict()),
            ('state_dict.pth', {'state_dict': reference.state_dict()})]:
        torch.save(container, tmp_path / name)
        model = pretrained(WaveMLP, TINY, tmp_path / name, out_norm=False)
        x = torch.randn(1, 3, 64, 96)
        with torch.no_grad():
            assert max_relative_error(model(x),
                                      reference.eval().dense_maps(x)) < 1e-5
    training_file(tmp_path / 'full.pth', reference)
    ema = pretrained(WaveMLP, TINY, tmp_path / 'full.pth', use_ema=True)
    assert torch.equal(ema.stem.conv.weight,
                       reference.patch_embed.proj.weight + 1)


def test_another_variant_is_refused_naming_both(tmp_path):
    torch.save({'state_dict': ReferenceWaveMLP('T_dw').state_dict()},
               tmp_path / 'WaveMLP_T_dw.pth.tar')
    with pytest.raises(CheckpointError,
                       match="holds arch 't-dw', the backbone is 't'"):
        pretrained(WaveMLP, 'T', tmp_path / 'WaveMLP_T_dw.pth.tar')


@pytest.mark.parametrize('kind', [
    dict(),  # T: every BatchNorm folds
    dict(dw_theta=True),  # T-dw: norm1 stays before the depthwise phase
    dict(group_norm=True),  # S: the GroupNorms stay
    dict(group_norm=True, embed_norm=False)])  # M, B
def test_deploy_form_of_each_kind(kind):
    model = realistic(WaveMLP({**TINY, **kind})).eval()
    deployed = copy.deepcopy(model)
    deployed.switch_to_deploy()
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        assert max_relative_error(deployed(x), model(x)) < 1e-5
    left = {type(m).__name__ for m in deployed.stages.modules()
            if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))}
    block = deployed.stages[0][0]
    if kind.get('group_norm'):
        assert left == {'GroupNorm'}
    elif kind.get('dw_theta'):
        assert isinstance(block.norm1, nn.BatchNorm2d) and \
            isinstance(block.norm2, nn.Identity)
    else:
        assert left == set()
    assert isinstance(block.attn.theta_h_conv[1], nn.Identity)


def test_arch_names_norm_kinds_and_bad_archs():
    assert WaveMLP('T_dw').arch == WaveMLP('t-DW').arch
    assert WaveMLP('T_dw').arch['dw_theta']
    small = WaveMLP('S', norm_cfg=dict(type='SyncBN'), out_indices=(0, 3))
    assert isinstance(small.norm0, nn.GroupNorm) and small.norm0.num_groups == 1
    assert isinstance(small.stages[0][0].norm1, nn.GroupNorm)
    assert isinstance(small.stages[0][0].attn.theta_h_conv[1],
                      nn.SyncBatchNorm)
    medium = WaveMLP('M')
    assert isinstance(medium.stem.bn, nn.Identity)
    assert medium.stages[0][0].mlp.fc1.out_channels == 64 * 8
    assert not hasattr(WaveMLP(TINY, norm_first_map=False), 'norm0')
    with pytest.raises(ArchError, match="arch\\['depths'\\] must be 4 ints"):
        WaveMLP({**TINY, 'depths': (1, 2, 1)})
    with pytest.raises(ArchError, match='mlp_ratios'):
        WaveMLP({**TINY, 'mlp_ratios': (4, 4, 0, 2)})
