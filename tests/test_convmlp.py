"""ConvMLP: the released network exactly (against an independent transcription
of the authors' code), the authors' four maps, checkpoints of every kind, the
deploy form and the constructor arguments shared with HireMLP."""
import copy
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from conftest import ROOT, check_with_cp_matches, randomize_norms
from mmengine.analysis import get_model_complexity_info
from reference_convmlp import ReferenceConvMLP
from reference_hire_mlp import ReferenceHireMLP

from mmhire.checkpoint import CheckpointError
from mmhire.errors import ArchError, DeployError
from mmhire.models import ConvMLP, HireMLP, switch_to_deploy

TINY = dict(stem_channels=16, conv_blocks=1, depths=(2, 3, 1),
            channels=(16, 32, 48), mlp_ratios=(2, 2, 1.5))


def relative_error(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def released_file(path, arch='small', seed=0):
    """A bare state dict with the classifier's keys, as the authors'
    ``convmlp_{s,m,l}_imagenet.pth``, of a reference with non-trivial BN
    statistics."""
    torch.manual_seed(seed)
    reference = randomize_norms(ReferenceConvMLP(arch)).eval()
    torch.save(reference.state_dict(), path)
    return reference


def pretrained(path, arch='small', **kwargs):
    backbone = ConvMLP(arch, init_cfg=dict(type='Pretrained',
                                           checkpoint=str(path)), **kwargs)
    backbone.init_weights()
    return backbone.eval()


@pytest.mark.real_size
@pytest.mark.parametrize('arch,params,flops', [
    ('small', 8_508_896, 2.399e9), ('medium', 16_896_480, 3.948e9),
    ('large', 41_957_904, 9.904e9)])
def test_parameters_and_flops_match_the_released_network(arch, params, flops):
    model = ConvMLP(arch)
    assert sum(p.numel() for p in model.parameters()) == params
    info = get_model_complexity_info(model, input_shape=(3, 224, 224),
                                     show_table=False, show_arch=False)
    assert info['flops'] == pytest.approx(flops, rel=0.01)


@pytest.mark.real_size
@pytest.mark.parametrize('arch,sizes', [
    ('small', [(224, 224), (97, 131)]), ('medium', [(97, 131)]),
    ('large', [(97, 131)])])
def test_released_file_gives_the_authors_four_maps(tmp_path, arch, sizes):
    reference = released_file(tmp_path / f'convmlp_{arch}.pth', arch)
    backbone = pretrained(tmp_path / f'convmlp_{arch}.pth', arch)
    for size in sizes:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            theirs, ours = reference.dense_maps(x), backbone(x)
        assert [o.shape for o in ours] == [t.shape for t in theirs]
        for out, ref in zip(ours, theirs):
            assert relative_error(out, ref) < 1e-5


def test_pyramid_at_an_odd_size():
    outs = ConvMLP('small')(torch.randn(1, 3, 97, 131))
    assert [tuple(o.shape[1:]) for o in outs] == [
        (64, 25, 33), (128, 13, 17), (256, 7, 9), (512, 4, 5)]
    assert all(o.is_contiguous() for o in outs)
    large = ConvMLP('LARGE', out_indices=(1, 3))  # any case
    assert large.out_channels == [192, 768]
    assert [o.shape[1] for o in large(torch.randn(1, 3, 33, 33))] == [192, 768]
    one_pixel = ConvMLP(TINY).eval()(torch.randn(1, 3, 1, 1))
    assert [o.shape[2] for o in one_pixel] == [1, 1, 1, 1]


def test_load_reports_one_line_naming_the_skipped_classifier(tmp_path):
    released_file(tmp_path / 'convmlp_s_imagenet.pth')
    from mmhire.checkpoint import load_pretrained
    message = load_pretrained(ConvMLP('small', out_norm=True),
                              tmp_path / 'convmlp_s_imagenet.pth')
    assert 'ConvMLP: loaded 180 tensors' in message  # 184 less 4
    assert 'released ImageNet checkpoint, bare state dict' in message
    assert 'no backbone tensor missing' in message
    assert ("skipped the classifier's norm.weight, norm.bias, head.weight, "
            'head.bias') in message
    assert 'fresh per-output norms: norm0, norm1, norm2, norm3' in message


def test_downstream_and_own_checkpoints_load(tmp_path):
    torch.manual_seed(1)
    source = randomize_norms(ConvMLP(TINY))
    backbone = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    # The authors' mmdet 2.x / mmseg 0.x files: state_dict, meta, optimizer.
    torch.save({'state_dict': backbone | {
        'neck.lateral_convs.0.conv.weight': torch.ones(2)},
        'meta': {'epoch': 12}, 'optimizer': {'state': {}}},
        tmp_path / 'retinanet_convmlp_coco.pth')
    torch.save(source.state_dict(), tmp_path / 'bare.pth')
    for name in ('retinanet_convmlp_coco.pth', 'bare.pth'):
        loaded = pretrained(tmp_path / name, TINY)
        for key, value in source.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key


def test_another_variant_or_network_is_refused_naming_both(tmp_path):
    released_file(tmp_path / 'convmlp_s.pth')
    medium = ConvMLP('medium', init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'convmlp_s.pth')))
    before = medium.tokenizer.block[0].weight.clone()
    with pytest.raises(CheckpointError,
                       match="holds arch 'small', the backbone is 'medium'"):
        medium.init_weights()
    assert torch.equal(before, medium.tokenizer.block[0].weight)

    torch.save({'model': ReferenceHireMLP('tiny').state_dict()},
               tmp_path / 'hire_mlp_tiny.pth')
    with pytest.raises(CheckpointError, match=(
            "holds a Hire-MLP 'tiny' network, not a ConvMLP one; this "
            "backbone is ConvMLP 'small'")):
        pretrained(tmp_path / 'hire_mlp_tiny.pth')
    with pytest.raises(CheckpointError, match=(
            "holds a ConvMLP 'small' network, not a Hire-MLP one; this "
            "backbone is Hire-MLP 'tiny'")):
        HireMLP('tiny', init_cfg=dict(
            type='Pretrained', checkpoint=str(tmp_path / 'convmlp_s.pth'))
        ).init_weights()


def test_convert_checkpoint_tool(tmp_path):
    reference = released_file(tmp_path / 'convmlp_s_imagenet.pth')
    result = subprocess.run(
        [sys.executable, str(ROOT / 'tools/convert_checkpoint.py'),
         str(tmp_path / 'convmlp_s_imagenet.pth'), str(tmp_path / 'c.pth')],
        capture_output=True, text=True, check=True)
    assert "ConvMLP, arch 'small'" in result.stdout
    assert '180 backbone tensors' in result.stdout
    assert 'dropped norm.weight, norm.bias, head.weight, head.bias' \
        in result.stdout
    clean = torch.load(tmp_path / 'c.pth', weights_only=True)
    assert clean['meta']['network'] == 'ConvMLP'
    assert clean['state_dict']['stages.1.blocks.3.connect.weight'].equal(
        reference.stages[1].blocks[3].connect.weight)


@pytest.mark.real_size
def test_deploy_form_gives_the_same_maps():
    model = randomize_norms(ConvMLP('small', out_norm=True))
    for m in model.modules():  # LayerNorm affine of a trained scale
        if isinstance(m, nn.LayerNorm):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    deployed = copy.deepcopy(model)
    assert switch_to_deploy(nn.Sequential(deployed)) == 1
    assert not any(isinstance(m, nn.BatchNorm2d)
                   for m in (*deployed.tokenizer.modules(),
                             *deployed.conv_stages.modules()))
    block = deployed.stages[0].blocks[0]
    assert block.norm1.weight is None and block.connect_norm.weight is not None
    x = torch.randn(1, 3, 160, 224)
    with torch.no_grad():
        for out, ref in zip(deployed(x), model(x)):
            assert relative_error(out, ref) < 1e-5
    with pytest.raises(DeployError, match='cannot be trained'):
        deployed.train()
    gn = ConvMLP(TINY, norm_cfg=dict(type='GN', num_groups=4))
    with pytest.raises(DeployError, match=r"\['GroupNorm'\] \(norm_cfg\)"):
        gn.switch_to_deploy()


def test_drop_path_restarts_in_each_stage():
    model = ConvMLP('medium', drop_path_rate=0.2)
    rates = [[getattr(b.drop_path, 'drop_prob', 0.) for b in s.blocks]
             for s in model.stages]
    expected = [torch.linspace(0, 0.2, n).tolist() for n in (3, 6, 3)]
    assert rates == expected
    default = ConvMLP('large')
    assert default.stages[1].blocks[-1].drop_path.drop_prob == \
        pytest.approx(0.1)


@pytest.mark.parametrize('frozen', [-1, 0, 1, 2, 4])
def test_frozen_stages(frozen):
    model = ConvMLP(TINY, frozen_stages=frozen, out_norm=True).train()
    parts = [model.tokenizer, model.conv_stages, *model.stages]
    for i, part in enumerate(parts):
        trainable = {p.requires_grad for p in part.parameters()}
        assert trainable == {i > frozen}, i
    assert model.norm3.weight.requires_grad == (frozen < 4)
    assert model.norm1.weight.requires_grad == (frozen < 1)
    assert model.tokenizer.block[1].training == (frozen < 0)


def test_norm_eval_and_bad_arguments():
    model = ConvMLP(TINY, norm_eval=True).train()
    assert not any(m.training for m in model.modules()
                   if isinstance(m, nn.BatchNorm2d))
    with pytest.raises(ArchError, match="unknown arch 'tiny'.*'small', "
                       "'medium', 'large'"):
        ConvMLP('tiny')
    with pytest.raises(ArchError, match="arch\\['depths'\\] must be 3 ints"):
        ConvMLP({**TINY, 'depths': (1, 2)})
    with pytest.raises(ArchError, match='stem_channels must be even'):
        ConvMLP({**TINY, 'stem_channels': 15})
    with pytest.raises(ArchError, match='frozen_stages must be in -1..4'):
        ConvMLP(TINY, frozen_stages=5)


def test_with_cp_gives_the_same_outputs_gradients_and_statistics():
    torch.manual_seed(0)
    check_with_cp_matches(ConvMLP(TINY, drop_path_rate=0.).train(),
                          torch.randn(2, 3, 40, 56))


def test_syncbn_only_where_batchnorm_is():
    model = ConvMLP(TINY, norm_cfg=dict(type='SyncBN'), out_norm=True)
    sync = [n for n, m in model.named_modules()
            if isinstance(m, nn.SyncBatchNorm)]
    assert len(sync) == 3 + 3 + 4  # tokenizer, one bottleneck, outputs
    assert sum(isinstance(m, nn.LayerNorm) for m in model.modules()) == \
        3 * sum(TINY['depths'])
