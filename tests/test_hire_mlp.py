"""Hire-MLP: the released network exactly (against an independent
transcription of the authors' code, forward and backward), their files'
names and shapes, the deploy form's folds, inference in tiles, and what the
arch and the per-output norms mean here. The contract every backbone meets
is in test_contract.py."""
import json

import pytest
import torch
from cases import HIRE_MLP as TINY
from conftest import ROOT, max_relative_error, pretrained, randomize_norms
from mmengine.analysis import get_model_complexity_info
from reference.hire_mlp import ReferenceHireMLP

from mmhire.checkpoint import CheckpointError
from mmhire.errors import DeployError
from mmhire.models import HireMLP, switch_to_deploy

# The parameter names and shapes of the four released files.
SHAPES = json.loads(
    (ROOT / 'tests/data/hire_mlp_released_shapes.json').read_text())


def converted(state_dict):
    """A released state dict in mmhire's names."""
    return HireMLP.from_released(state_dict)[0]


def strides_of(outs, size):
    return [size // o.shape[-1] for o in outs]


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base', 'large'])
def test_every_arch_gives_the_pyramid(arch):
    model = HireMLP(arch).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == list(HireMLP.arch_zoo[arch]['channels'])
    assert strides_of(outs, 64) == [4, 8, 16, 32]


@pytest.mark.real_size
@pytest.mark.parametrize('arch,params,flops', [
    ('tiny', 17.528, 2.148), ('small', 32.600, 4.239),
    ('base', 57.713, 8.125), ('large', 94.953, 13.441)])
def test_parameters_and_flops_match_the_released_network(arch, params, flops):
    model = HireMLP(arch, out_norm=False).eval()
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 3) == params
    info = get_model_complexity_info(model, input_shape=(3, 224, 224),
                                     show_table=False, show_arch=False)
    assert round(info['flops'] / 1e9, 3) == flops


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base', 'large'])
def test_converted_reference_names_and_shapes_fill_the_backbone(arch):
    ours, dropped = HireMLP.from_released(
        {k: torch.zeros(v) for k, v in SHAPES[arch].items()})
    model = HireMLP(arch, out_norm=False)
    expected = model.state_dict()
    assert sorted(ours) == sorted(expected)
    assert all(ours[k].shape == expected[k].shape for k in expected)
    assert len(dropped) == 7  # the classifier's norm and head
    assert HireMLP.arch_of(ours) == dict(
        depths=HireMLP.arch_zoo[arch]['depths'],
        channels=HireMLP.arch_zoo[arch]['channels'])


def reference_and_ours(arch='tiny', **kwargs):
    reference = randomize_norms(ReferenceHireMLP(arch))
    model = HireMLP(arch, out_norm=False, **kwargs)
    model.load_state_dict(converted(reference.state_dict()))
    return reference, model


@pytest.mark.parametrize('size', [(224, 224), (97, 131), (33, 47), (32, 32),
                                  (19, 40)])
def test_same_outputs_as_the_reference_network(size):
    reference, model = reference_and_ours()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ours = model.eval()(x)
        theirs = reference.eval().forward_features(x)
    assert [o.shape for o in ours] == [t.shape for t in theirs]
    assert all(o.is_contiguous() for o in ours)  # plain NCHW outputs
    assert max_relative_error(ours, theirs) < 1e-5


def test_same_training_step_as_the_reference_network():
    # In float64, so that rounding (amplified by training-mode BN over few
    # samples) cannot hide a difference in the arithmetic.
    reference, model = reference_and_ours()
    reference, model = reference.double().train(), model.double().train()
    x = torch.randn(2, 3, 75, 90, dtype=torch.float64)
    assert max_relative_error(model(x), reference.forward_features(x)) < 1e-12
    sum((o * o).mean() for o in model(x)).backward()
    sum((o * o).mean() for o in reference.forward_features(x)).backward()
    grads = converted({k: p.grad for k, p in reference.named_parameters()
                       if p.grad is not None})
    # The conv biases in front of the stem's and downsamplers' training-mode
    # BN have a true gradient of zero: only rounding noise to compare there.
    grads = {k: g for k, g in grads.items() if not k.endswith('conv.bias')}
    ours = dict(model.named_parameters())
    assert max(((ours[k].grad - g).abs().max() / g.abs().max()).item()
               for k, g in grads.items()) < 1e-10
    stats = converted(reference.state_dict())
    assert max((model.state_dict()[k] - v).abs().max().item()
               for k, v in stats.items() if 'running' in k) < 1e-12


@pytest.mark.parametrize('arch', ['tiny', 'large'])
def test_deploy_form_folds_every_inner_batchnorm(arch):
    reference, model = reference_and_ours(arch)
    model = randomize_norms(model).eval()
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        before = model(x)
        assert switch_to_deploy(model) == 1
        after = model(x)
    norms = [m for m in model.modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms == []  # out_norm=False: nothing left to fold
    assert max_relative_error(after, before) < 1e-4
    with pytest.raises(DeployError, match='cannot be trained'):
        model.train()


@pytest.mark.parametrize('tile_tokens', [1, 50])
def test_inference_in_tiles_gives_the_same_outputs(monkeypatch, tile_tokens):
    # Large maps run the blocks' tails in row tiles; force that on small
    # ones, with rolled branches and padding along both axes.
    from mmhire.models.backbones.hire_mlp import HireBlock
    reference, model = reference_and_ours()
    model.eval()
    x = torch.randn(2, 3, 97, 131)
    tiled_blocks = []
    forward_tiled = HireBlock._forward_tiled
    monkeypatch.setattr(HireBlock, '_forward_tiled', lambda *args: (
        tiled_blocks.append(1), forward_tiled(*args))[1])
    with torch.no_grad():
        theirs = reference.eval().forward_features(x)
        monkeypatch.setattr(HireBlock, 'TILE_ABOVE', 0)
        monkeypatch.setattr(HireBlock, 'TILE_TOKENS', tile_tokens)
        tiled = model(x)
        model.switch_to_deploy()
        tiled_deploy = model(x)
    blocks = sum(model.arch['depths'])
    assert len(tiled_blocks) == 2 * blocks  # every block, in both forms
    assert max_relative_error(tiled, theirs) < 1e-5
    assert max_relative_error(tiled_deploy, theirs) < 1e-4


def test_group_norm_runs_whole_and_is_not_folded(monkeypatch):
    from mmhire.models.backbones.hire_mlp import HireBlock
    model = HireMLP(TINY, norm_cfg=dict(type='GN', num_groups=2)).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        whole = model(x)
        monkeypatch.setattr(HireBlock, 'TILE_ABOVE', 0)
        monkeypatch.setattr(HireBlock, 'TILE_TOKENS', 8)
        again = model(x)  # GroupNorm needs the whole map: no tiles
    assert all(torch.equal(a, b) for a, b in zip(whole, again))
    with pytest.raises(DeployError, match='BatchNorm layers only'):
        model.switch_to_deploy()


def test_deploy_keeps_the_per_output_norms():
    model = randomize_norms(HireMLP(TINY)).eval()
    model.switch_to_deploy()
    norms = {n for n, m in model.named_modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    assert norms == {'norm0', 'norm1', 'norm2', 'norm3'}


@pytest.mark.parametrize('size,expected', [
    ((32, 32), [(8, 8), (4, 4), (2, 2), (1, 1)]),
    ((35, 61), [(9, 15), (5, 8), (3, 4), (2, 2)]),
    ((100, 33), [(25, 8), (13, 4), (7, 2), (4, 1)]),
])
def test_odd_and_tiny_inputs(size, expected):
    model = HireMLP(TINY).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert [tuple(o.shape[2:]) for o in outs] == expected
    # Circular padding to whole regions cannot add more tokens than a map
    # has: the smallest input whose every map allows it.
    assert model.min_input_size == 19


def test_out_indices_have_their_norms():
    model = HireMLP(TINY, out_indices=(3, 1))
    outs = model(torch.randn(2, 3, 64, 64))
    assert strides_of(outs, 64) == [8, 32]
    norms = {n.split('.')[0] for n, _ in model.named_parameters()
             if n.startswith('norm')}
    assert norms == {'norm1', 'norm3'}
    assert not any(n.startswith('norm') for n, _ in HireMLP(
        TINY, out_norm=False).named_parameters())
    # Every parameter takes part in the loss: DDP finds none unused.
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize('arch,message', [
    ({**TINY, 'depths': (2, 2, 2)}, r"arch\['depths'\] must be 4 ints"),
    ({**TINY, 'region_sizes': (4, 0, 3, 2)},
     r"arch\['region_sizes'\] must be 4 ints >= 1"),
    ({**TINY, 'channels': (16, 32, 2, 64)}, 'at least 4'),
])
def test_bad_arch_is_a_clear_error(arch, message):
    with pytest.raises(ValueError, match=message):
        HireMLP(arch)


def test_custom_arch_shifts_each_block_by_its_period():
    model = HireMLP(TINY)
    shifts = [[block.hire.branch_h.shift for block in stage]
              for stage in model.stages]
    assert shifts == [[0, 2], [0, 2], [0, 1, 2], [0, 1]]
    assert [stage[0].hire.branch_w.region_size
            for stage in model.stages] == [4, 3, 3, 2]


def test_drop_path_rises_linearly_over_all_blocks():
    model = HireMLP(TINY, drop_path_rate=0.4)
    rates = [getattr(b.drop_path, 'drop_prob', 0.) for s in model.stages
             for b in s]
    assert rates == pytest.approx(torch.linspace(0, 0.4, 9).tolist())


@pytest.mark.parametrize('frozen', [0, 2])
def test_frozen_stages_are_the_stem_and_the_first_stages(frozen):
    modules = HireMLP(TINY, frozen_stages=frozen).frozen_modules()
    assert modules[0].conv.kernel_size == (7, 7)  # the stem
    # Each stage with its norm, and the downsampling before all but the
    # first.
    assert len(modules) == 1 + 3 * frozen - (frozen > 0)


def test_syncbn_is_used_for_every_norm():
    model = HireMLP(TINY, norm_cfg=dict(type='SyncBN'))
    norms = [m for m in model.modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, torch.nn.SyncBatchNorm) for m in norms)


def test_fused_inference_kernels_match_the_plain_ops():
    from mmhire.models.fused_ops import conv_act, conv_add
    x = torch.randn(1, 16, 23, 37).contiguous(
        memory_format=torch.channels_last)
    fc1, fc2 = torch.nn.Conv2d(16, 64, 1), torch.nn.Conv2d(64, 16, 1)
    with torch.enable_grad():  # autograd on: the plain ops
        plain = x + fc2(torch.nn.functional.gelu(fc1(x)))
    with torch.no_grad():
        fused = conv_add(conv_act(x, fc1.weight, fc1.bias, 'gelu'),
                         fc2.weight, fc2.bias, x)
        relu = conv_act(x, fc1.weight, fc1.bias, 'relu', (2, 1))
        added = conv_add(x, fc2.weight[:, :16], fc2.bias, x)
    assert torch.allclose(fused, plain, atol=1e-5)
    assert torch.allclose(relu, torch.relu(torch.nn.functional.conv2d(
        x, fc1.weight, fc1.bias, stride=(2, 1))), atol=1e-5)
    assert torch.allclose(added, x + torch.nn.functional.conv2d(
        x, fc2.weight[:, :16], fc2.bias), atol=1e-5)


# The authors' files.

def released_file(path, arch='tiny'):
    """A bare state dict in the released names, of a reference with
    non-trivial BatchNorms."""
    reference = randomize_norms(ReferenceHireMLP(arch))
    torch.save({'model': reference.state_dict()}, path)
    return reference


def test_released_names_map_to_their_modules(tmp_path):
    released = released_file(tmp_path / 'hire_mlp_tiny.pth').state_dict()
    ours = pretrained(HireMLP, 'tiny', tmp_path / 'hire_mlp_tiny.pth',
                      out_norm=False).state_dict()
    assert torch.equal(ours['stages.2.3.hire.branch_w.fc1.weight'],
                       released['network.4.3.attn.mlp_w1.weight'])
    assert torch.equal(ours['downsamples.1.bn.running_var'],
                       released['network.3.norm.running_var'])
    assert torch.equal(ours['stem.conv.bias'],
                       released['patch_embed.proj.bias'])


def test_load_reports_one_line(tmp_path):
    released_file(tmp_path / 'r.pth')
    message = HireMLP('tiny', out_indices=(1, 2)).load_pretrained(
        tmp_path / 'r.pth')
    # 415 less the classifier's 7, less the unbuilt last stage's 83
    assert 'HireMLP: loaded 325 tensors' in message
    assert 'released ImageNet checkpoint, model weights' in message
    assert 'no backbone tensor missing' in message
    assert ("skipped the classifier's norm.weight, norm.bias, "
            'norm.running_mean') in message
    assert 'fresh per-output norms: norm1, norm2' in message
    assert ('not needed for out_indices (1, 2): 83 tensors of '
            'downsamples.2, stages.3') in message


def test_another_arch_is_refused_naming_both(tmp_path):
    released_file(tmp_path / 'tiny.pth')
    backbone = HireMLP('small', init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'tiny.pth')))
    before = backbone.stem.conv.weight.clone()
    with pytest.raises(CheckpointError,
                       match="holds arch 'tiny', the backbone is 'small'"):
        backbone.init_weights()
    assert torch.equal(before, backbone.stem.conv.weight)
