import json

import pytest
import torch
from conftest import ROOT, randomize_norms
from mmengine.analysis import get_model_complexity_info
from reference_hire_mlp import ReferenceHireMLP

from mmhire.checkpoint import backbone_state_dict
from mmhire.errors import DeployError
from mmhire.models import HireMLP, switch_to_deploy

SHAPES = json.loads(
    (ROOT.parent / 'shared/reference/official_hire_mlp_state_dict_shapes.json'
     ).read_text())


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
    state_dict = {k: torch.zeros(v) for k, v in SHAPES[arch].items()}
    converted = backbone_state_dict({'model': state_dict})[0]
    model = HireMLP(arch, out_norm=False)
    expected = model.state_dict()
    assert sorted(converted) == sorted(expected)
    assert all(converted[k].shape == expected[k].shape for k in expected)
    assert len(SHAPES[arch]) - len(converted) == 7  # classifier norm + head


def max_relative_error(ours, theirs):
    return max(((a - b).abs().max() / b.abs().max()).item()
               for a, b in zip(ours, theirs))


def reference_and_ours(arch='tiny', **kwargs):
    reference = randomize_norms(ReferenceHireMLP(arch))
    model = HireMLP(arch, out_norm=False, **kwargs)
    model.load_state_dict(backbone_state_dict({'model':
                                               reference.state_dict()})[0])
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
    grads = backbone_state_dict({'model': {
        k: p.grad for k, p in reference.named_parameters()
        if p.grad is not None}})[0]
    # The conv biases in front of the stem's and downsamplers' training-mode
    # BN have a true gradient of zero: only rounding noise to compare there.
    grads = {k: g for k, g in grads.items() if not k.endswith('conv.bias')}
    ours = dict(model.named_parameters())
    assert max(((ours[k].grad - g).abs().max() / g.abs().max()).item()
               for k, g in grads.items()) < 1e-10
    stats = backbone_state_dict({'model': reference.state_dict()})[0]
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
    with torch.no_grad():
        theirs = reference.eval().forward_features(x)
        monkeypatch.setattr(HireBlock, 'TILE_ABOVE', 0)
        monkeypatch.setattr(HireBlock, 'TILE_TOKENS', tile_tokens)
        tiled = model(x)
        model.switch_to_deploy()
        tiled_deploy = model(x)
    assert max_relative_error(tiled, theirs) < 1e-5
    assert max_relative_error(tiled_deploy, theirs) < 1e-4


def test_group_norm_runs_whole_and_is_not_folded(monkeypatch, tiny_arch):
    from mmhire.models.backbones.hire_mlp import HireBlock
    model = HireMLP(tiny_arch, norm_cfg=dict(type='GN', num_groups=2)).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        whole = model(x)
        monkeypatch.setattr(HireBlock, 'TILE_ABOVE', 0)
        monkeypatch.setattr(HireBlock, 'TILE_TOKENS', 8)
        again = model(x)  # GroupNorm needs the whole map: no tiles
    assert all(torch.equal(a, b) for a, b in zip(whole, again))
    with pytest.raises(DeployError, match='BatchNorm layers only'):
        model.switch_to_deploy()


def test_deploy_keeps_the_per_output_norms(tiny_arch):
    model = randomize_norms(HireMLP(tiny_arch)).eval()
    model.switch_to_deploy()
    norms = {n for n, m in model.named_modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    assert norms == {'norm0', 'norm1', 'norm2', 'norm3'}


@pytest.mark.parametrize('size,expected', [
    ((32, 32), [(8, 8), (4, 4), (2, 2), (1, 1)]),
    ((35, 61), [(9, 15), (5, 8), (3, 4), (2, 2)]),
    ((100, 33), [(25, 8), (13, 4), (7, 2), (4, 1)]),
])
def test_odd_and_tiny_inputs(tiny_arch, size, expected):
    model = HireMLP(tiny_arch).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert [tuple(o.shape[2:]) for o in outs] == expected


def test_too_small_input_is_a_clear_error(tiny_arch):
    model = HireMLP(tiny_arch).eval()
    assert model.min_input_size == 19
    model(torch.randn(1, 3, 19, 19))
    with pytest.raises(ValueError, match='at least 19x19'):
        model(torch.randn(1, 3, 18, 64))
    with pytest.raises(ValueError, match=r'expected an \(N, 3, H, W\)'):
        model(torch.randn(1, 1, 64, 64))


def test_out_indices_and_their_norms(tiny_arch):
    model = HireMLP(tiny_arch, out_indices=(3, 1))
    outs = model(torch.randn(2, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 64]
    assert strides_of(outs, 64) == [8, 32]
    norms = {n.split('.')[0] for n, _ in model.named_parameters()
             if n.startswith('norm')}
    assert norms == {'norm1', 'norm3'}
    assert not any(n.startswith('norm') for n, _ in HireMLP(
        tiny_arch, out_norm=False).named_parameters())
    # Every parameter takes part in the loss: DDP finds none unused.
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize('arch,message', [
    ('huge', "unknown arch 'huge'.*'tiny', 'small', 'base', 'large'"),
    (dict(depths=(2, 2, 2, 2)), 'exactly the keys'),
    (dict(depths=(2, 2, 2), channels=(8, 8, 8, 8), region_sizes=(4, 3, 3, 2),
          shift_sizes=(2, 2, 1, 1), shift_periods=(2, 2, 3, 2)),
     r"arch\['depths'\] must be 4 ints"),
    (dict(depths=(2, 2, 2, 2), channels=(8, 8, 8, 8), region_sizes=(4, 0, 3, 2),
          shift_sizes=(2, 2, 1, 1), shift_periods=(2, 2, 3, 2)),
     r"arch\['region_sizes'\] must be 4 ints >= 1"),
    (['tiny'], 'must be a dict'),
])
def test_bad_arch_is_a_clear_error(arch, message):
    with pytest.raises(ValueError, match=message):
        HireMLP(arch)


def test_bad_out_indices_and_frozen_stages():
    with pytest.raises(ValueError, match='subset of 0..3'):
        HireMLP('tiny', out_indices=(0, 4))
    with pytest.raises(ValueError, match='frozen_stages'):
        HireMLP('tiny', frozen_stages=5)


def test_custom_arch_shifts_each_block_by_its_period(tiny_arch):
    model = HireMLP(tiny_arch)
    shifts = [[block.hire.branch_h.shift for block in stage]
              for stage in model.stages]
    assert shifts == [[0, 2], [0, 2], [0, 1, 2], [0, 1]]
    assert [stage[0].hire.branch_w.region_size
            for stage in model.stages] == [4, 3, 3, 2]


def test_drop_path_rises_linearly_over_all_blocks(tiny_arch):
    model = HireMLP(tiny_arch, drop_path_rate=0.4)
    rates = [getattr(b.drop_path, 'drop_prob', 0.) for s in model.stages
             for b in s]
    assert rates == pytest.approx(torch.linspace(0, 0.4, 9).tolist())


def bn_state(module):
    return {k: v.clone() for k, v in module.state_dict().items()
            if 'running' in k or 'num_batches' in k}


@pytest.mark.parametrize('frozen', [0, 2])
def test_frozen_stages(tiny_arch, frozen):
    model = HireMLP(tiny_arch, frozen_stages=frozen)
    model.train()
    frozen_modules = model.frozen_modules()
    assert frozen_modules[0] is model.stem
    assert len(frozen_modules) == 1 + 3 * frozen - (frozen > 0)
    before = [bn_state(m) for m in frozen_modules]
    sum(o.sum() for o in model(torch.randn(2, 3, 64, 64))).backward()
    for module, stats in zip(frozen_modules, before):
        assert not module.training
        for p in module.parameters():
            assert not p.requires_grad and p.grad is None
        after = bn_state(module)
        assert all(torch.equal(stats[k], after[k]) for k in stats)
    assert model.stages[frozen].training
    assert all(p.grad is not None for p in model.stages[frozen].parameters())


def test_norm_eval_keeps_every_norm_in_eval_mode(tiny_arch):
    model = HireMLP(tiny_arch, norm_eval=True).train()
    norms = [m for m in model.modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and not any(m.training for m in norms)
    assert model.stages[0][0].ffn.training


def test_with_cp_gives_the_same_outputs_gradients_and_statistics(tiny_arch):
    torch.manual_seed(1)
    plain = HireMLP(tiny_arch, drop_path_rate=0.)
    checkpointed = HireMLP(tiny_arch, drop_path_rate=0., with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    results = []
    for model in (plain, checkpointed):
        inp = x.clone().requires_grad_()
        outs = model.train()(inp)
        sum((o * o).sum() for o in outs).backward()
        results.append((outs, inp.grad,
                        {n: p.grad for n, p in model.named_parameters()},
                        bn_state(model)))
    (o1, gx1, g1, s1), (o2, gx2, g2, s2) = results
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(o1, o2))
    assert torch.allclose(gx1, gx2, atol=1e-5)
    assert all(torch.allclose(g1[n], g2[n], atol=1e-5, rtol=1e-4) for n in g1)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_syncbn_is_used_for_every_norm(tiny_arch):
    model = HireMLP(tiny_arch, norm_cfg=dict(type='SyncBN'))
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
