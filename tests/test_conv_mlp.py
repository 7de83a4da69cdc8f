"""ConvMLP: the released network exactly (against an independent transcription
of the authors' code) at the real sizes, the authors' four maps, their
detection files, the deploy form's folds, and what the arch and the stages
mean here. The contract every backbone meets is in test_contract.py."""
import copy

import pytest
import torch
import torch.nn as nn
from cases import CONV_MLP as TINY
from conftest import pretrained, randomize_norms, relative_error
from mmengine.analysis import get_model_complexity_info
from reference.conv_mlp import ReferenceConvMLP

from mmhire.checkpoint import CheckpointError
from mmhire.errors import ArchError, DeployError
from mmhire.models import ConvMLP, switch_to_deploy


def released_file(path, arch='small', seed=0):
    """A bare state dict with the classifier's keys, as the authors'
    ``convmlp_{s,m,l}_imagenet.pth``, of a reference with non-trivial BN
    statistics."""
    torch.manual_seed(seed)
    reference = randomize_norms(ReferenceConvMLP(arch)).eval()
    torch.save(reference.state_dict(), path)
    return reference


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
    backbone = pretrained(ConvMLP, arch, tmp_path / f'convmlp_{arch}.pth')
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
        loaded = pretrained(ConvMLP, TINY, tmp_path / name)
        for key, value in source.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key


def test_another_variant_is_refused_naming_both(tmp_path):
    released_file(tmp_path / 'convmlp_s.pth')
    medium = ConvMLP('medium', init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'convmlp_s.pth')))
    before = medium.tokenizer.block[0].weight.clone()
    with pytest.raises(CheckpointError,
                       match="holds arch 'small', the backbone is 'medium'"):
        medium.init_weights()
    assert torch.equal(before, medium.tokenizer.block[0].weight)


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
    rates = [getattr(b.drop_path, 'drop_prob', 0.) for s in model.stages
             for b in s.blocks]
    assert rates == pytest.approx([0.2 * i / (n - 1) for n in (3, 6, 3)
                                   for i in range(n)])
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


def test_bad_arch_is_a_clear_error():
    with pytest.raises(ArchError, match="arch\\['depths'\\] must be 3 ints"):
        ConvMLP({**TINY, 'depths': (1, 2)})
    with pytest.raises(ArchError, match='stem_channels must be even'):
        ConvMLP({**TINY, 'stem_channels': 15})
    with pytest.raises(ArchError, match='mlp_ratios'):
        ConvMLP({**TINY, 'mlp_ratios': (2, 0, 1)})


def test_syncbn_only_where_batchnorm_is():
    model = ConvMLP(TINY, norm_cfg=dict(type='SyncBN'), out_norm=True)
    sync = [n for n, m in model.named_modules()
            if isinstance(m, nn.SyncBatchNorm)]
    assert len(sync) == 3 + 3 + 4  # tokenizer, one bottleneck, outputs
    assert sum(isinstance(m, nn.LayerNorm) for m in model.modules()) == \
        3 * sum(TINY['depths'])
