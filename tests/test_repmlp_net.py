"""RepMLPNet: the released network exactly (against a transcription of the
authors' code), the corrected partition restore, any input size, Locality
Injection, 3x3/5x5 embeddings, and checkpoints of every container kind. The
contract every backbone meets is in test_contract.py."""
import copy
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from cases import REPMLP_NET as TINY
from conftest import pretrained, randomize_norms, relative_error
from mmengine.analysis import get_model_complexity_info
from reference.repmlp_net import ReferenceRepMLPNet
from reference.repmlp_net import RepMLPBlock as ReferenceBlock

from mmhire.checkpoint import CheckpointError
from mmhire.errors import ArchError, InputError
from mmhire.models import RepMLPNet, switch_to_deploy
from mmhire.models.backbones.repmlp_net import RepMLPBlock

TINY_REF = tuple(TINY.values())


def realistic(model):
    """Non-trivial BatchNorms, with the ones ending each residual branch
    scaled down as training leaves them (with gammas ~1 a deep network's
    activations reach 1e6 and float32 round-off dominates any comparison)."""
    randomize_norms(model)
    for name, m in model.named_modules():
        if name.endswith(('fc3_bn', 'repconv1.bn', 'repconv3.bn',
                          'ffn_fc2.bn')):
            m.weight.data *= 0.3
    return model


def reference(arch=TINY_REF, seed=0, **kwargs):
    torch.manual_seed(seed)
    return realistic(ReferenceRepMLPNet(arch, **kwargs)).eval()


def maps(model, x):
    with torch.no_grad():
        if isinstance(model, ReferenceRepMLPNet):
            return list(model.dense_maps(x))
        return list(model(x))


def load(path, arch=TINY, **kwargs):
    return pretrained(RepMLPNet, arch, path, **kwargs)


# The partition-restore bug of the authors' block.

def test_official_restore_is_right_for_one_patch_and_wrong_for_several():
    torch.manual_seed(0)
    official = ReferenceBlock(8, 8, 4, 4, (1, 3), 4, 2).eval()
    corrected = ReferenceBlock(8, 8, 4, 4, (1, 3), 4, 2,
                               restore='corrected').eval()
    corrected.load_state_dict(official.state_dict())
    ours = RepMLPBlock(8, 4, 2, dict(type='BN')).eval()
    ours.load_state_dict(official.state_dict())
    with torch.no_grad():
        one = torch.randn(2, 8, 4, 4)
        assert torch.equal(official(one), corrected(one))
        several = torch.randn(2, 8, 8, 12)
        assert relative_error(official(several), corrected(several)) > 0.1
        assert relative_error(ours(several), corrected(several)) < 1e-6


def test_block_with_identity_fc_returns_its_input_gated_on_2x3_patches():
    block = RepMLPBlock(8, 4, 2, dict(type='BN'), deploy=True).eval()
    with torch.no_grad():
        block.fc3.weight.copy_(torch.eye(16).repeat(2, 1)[:, :, None, None])
        block.fc3.bias.zero_()
        block.gp.fc2.weight.zero_()
        block.gp.fc2.bias.fill_(0.7)
        x = torch.randn(2, 8, 8, 12)
        assert torch.allclose(block(x), x * torch.sigmoid(torch.tensor(0.7)),
                              atol=1e-6)
        reference = ReferenceBlock(8, 8, 4, 4, None, 4, 2, deploy=True)
        reference.load_state_dict(block.state_dict())
        assert not torch.allclose(reference(x), block(x))  # the bug


# The released network.

@pytest.mark.real_size
@pytest.mark.parametrize('arch,params,deployed,macs', [
    ('T224', 37_779_584, 37_817_696, 2.798e9),
    ('T256', 58_173_824, 58_225_376, 4.246e9),
    ('B224', 67_472_176, 67_562_128, 6.657e9),
    ('B256', 95_676_976, 95_797_648, 9.616e9),
    ('D256', 86_245_368, 86_343_000, 8.611e9),
    ('L256', 116_871_024, 117_050_064, 11.579e9)])
def test_parameters_and_macs_match_the_released_network(arch, params,
                                                         deployed, macs):
    model = RepMLPNet(arch)
    assert sum(p.numel() for p in model.parameters()) == params
    model = RepMLPNet(arch.lower(), deploy=True).eval()
    assert sum(p.numel() for p in model.parameters()) == deployed
    size = int(arch[1:])
    info = get_model_complexity_info(model, inputs=(torch.zeros(1, 3, size,
                                                                size), ),
                                     show_table=False, show_arch=False)
    assert info['flops'] == pytest.approx(macs, rel=0.01)


@pytest.mark.real_size
def test_released_t224_reproduces_the_reference_and_its_deploy_form():
    ref = reference('T224')
    model = RepMLPNet('T224').eval()
    model.load_state_dict({k: v for k, v in ref.state_dict().items()
                           if not k.startswith('head')})
    x = torch.randn(1, 3, 224, 224)
    for ours, theirs in zip(maps(model, x), maps(ref, x)):
        assert relative_error(ours, theirs) < 1e-5
    x = torch.randn(1, 3, 448, 672)  # 2x3 patches per map
    trained = maps(model, x)
    model.switch_to_deploy()
    for a, b in zip(maps(model, x), trained):
        assert relative_error(a, b) < 1e-5


@pytest.mark.parametrize('size', [(64, 64), (128, 192)])
def test_same_maps_as_the_reference_wherever_its_restore_is_right(size):
    ref = reference(restore='corrected')
    model = RepMLPNet(TINY).eval()
    model.load_state_dict({k: v for k, v in ref.state_dict().items()
                           if not k.startswith('head')})
    x = torch.randn(2, 3, *size)
    for ours, theirs in zip(maps(model, x), maps(ref, x)):
        assert relative_error(ours, theirs) < 1e-6
    if size == (64, 64):  # one patch: the authors' own restore agrees
        official = reference()
        for ours, theirs in zip(maps(model, x), maps(official, x)):
            assert relative_error(ours, theirs) < 1e-6


@pytest.mark.parametrize('size', [(128, 192), (97, 131), (40, 36)])
def test_deploy_form_equals_training_form_at_any_size(size):
    model = realistic(RepMLPNet(TINY, out_norm=True)).eval()
    x = torch.randn(2, 3, *size)
    trained = maps(model, x)
    deployed = copy.deepcopy(model)
    assert switch_to_deploy(nn.Sequential(deployed)) == 1
    block = deployed.stages[0][0].repmlp_block
    assert isinstance(block.fc3_bn, nn.Identity) and block.fc3.bias is not None
    assert not hasattr(block, 'repconv3')
    assert deployed.stages[0][0].prebn1.training is False  # BNs stay
    for a, b in zip(maps(deployed, x), trained):
        assert relative_error(a, b) < 1e-5
    built = RepMLPNet(TINY, out_norm=True, deploy=True).eval()
    built.load_state_dict(deployed.state_dict())
    for a, b in zip(maps(built, x), trained):
        assert relative_error(a, b) < 1e-5
    # Unlike the other backbones' deploy forms, this one still trains (the
    # authors fine-tune converted models too).
    sum(o.mean() for o in deployed.train()(x)).backward()
    assert block.fc3.bias.grad is not None


def test_pyramid_at_odd_sizes():
    model = RepMLPNet(TINY).eval()
    shapes = [tuple(m.shape[1:]) for m in maps(model,
                                               torch.randn(1, 3, 193, 257))]
    assert shapes == [(8, 48, 64), (16, 24, 32), (32, 12, 16), (64, 6, 8)]
    with pytest.raises(InputError, match='at least 32x32'):
        model(torch.randn(1, 3, 31, 64))


@pytest.mark.parametrize('kernel', [3, 5])
def test_larger_embeddings_compute_the_released_2x2_ones(tmp_path, kernel):
    ref = reference()
    torch.save(ref.state_dict(), tmp_path / 'released.pth')
    model = load(tmp_path / 'released.pth', embed_kernel=kernel)
    assert model.embeds[0].conv.kernel_size == (kernel, kernel)
    x = torch.randn(1, 3, 64, 128)
    plain = load(tmp_path / 'released.pth')
    for a, b in zip(maps(model, x), maps(plain, x)):
        assert relative_error(a, b) < 1e-6
    with pytest.raises(ArchError, match=r'embed_kernel must be one of '
                       r'\(2, 3, 5\), got 4'):
        RepMLPNet(TINY, embed_kernel=4)
    torch.save(model.state_dict(), tmp_path / 'fine_tuned.pth')
    other = 8 - kernel  # 5 for 3, 3 for 5
    with pytest.raises(CheckpointError, match=(
            f'embeddings are {kernel}x{kernel} .*this backbone\'s '
            f'{other}x{other}; set embed_kernel={kernel}')):
        load(tmp_path / 'fine_tuned.pth', embed_kernel=other)


# Checkpoints.

def _yacs_config():
    from yacs.config import CfgNode
    config = CfgNode()
    config.MODEL = CfgNode()
    config.MODEL.ARCH = 'RepMLPNet-T224'
    config.TRAIN = CfgNode()
    config.TRAIN.BASE_LR = 0.001
    config.AUG = CfgNode(dict(MIXUP=0.4, CUTMIX=1.0))
    config.freeze()
    return config


def container(kind, state_dict):
    if kind == 'plain':
        return state_dict
    if kind == 'model':
        return {'model': state_dict}
    if kind == 'state_dict, module.':
        return {'state_dict': {f'module.{k}': v
                               for k, v in state_dict.items()}}
    if kind == 'training checkpoint':
        return {'model': state_dict, 'optimizer': {'state': {}},
                'lr_scheduler': {}, 'max_accuracy': 76.6, 'epoch': 99,
                'config': _yacs_config()}
    assert kind == 'mmpretrain'
    from mmhire.models.backbones.repmlp_net import _MMPRETRAIN_RENAMES
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith('head.'):
            renamed[key.replace('head.', 'head.fc.')] = value
            continue
        for official, theirs in (
                ('conv_embedding.conv.', 'patch_embed.projection.'),
                ('conv_embedding.bn.', 'patch_embed.norm.'),
                ('embeds.', 'downsample_layers.'), ('.prebn1.', '.norm1.'),
                ('.prebn2.', '.norm2.'), ('.gp.fc1.', '.gp.conv1.conv.'),
                ('.gp.fc2.', '.gp.conv2.conv.'), ('head_norm.', 'final_norm.')):
            key = key.replace(official, theirs)
        renamed[f'backbone.{key}'] = value
    assert _MMPRETRAIN_RENAMES
    return {'meta': {'mmpretrain_version': '1.2.0'}, 'state_dict': renamed}


KINDS = ['plain', 'model', 'state_dict, module.', 'training checkpoint',
         'mmpretrain']


@pytest.mark.parametrize('kind', KINDS)
def test_released_files_of_every_container_load_exactly(tmp_path, kind):
    ref = reference()
    path = tmp_path / 'RepMLPNet-train.pth'
    torch.save(container(kind, ref.state_dict()), path)
    model = load(path)
    x = torch.randn(1, 3, 64, 64)
    for ours, theirs in zip(maps(model, x), maps(ref, x)):
        assert relative_error(ours, theirs) < 1e-6
    for key, value in model.state_dict().items():
        assert torch.equal(value, ref.state_dict()[key]), key


def test_training_checkpoint_loads_without_yacs(tmp_path):
    torch.save(container('training checkpoint', reference().state_dict()),
               tmp_path / 'ckpt_epoch_99.pth')
    script = (
        'import sys; sys.modules["yacs"] = None\n'  # importing yacs fails
        'from mmhire.checkpoint import safe_load\n'
        f'c = safe_load({str(tmp_path / "ckpt_epoch_99.pth")!r})\n'
        'print(type(c["config"]).__name__, c["config"]["TRAIN"]["BASE_LR"],'
        ' c["epoch"])\n')
    result = subprocess.run([sys.executable, '-c', script],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ['OrderedDict', '0.001', '99']


def test_deploy_files_load_into_the_deploy_form_only(tmp_path):
    ref = reference()
    x = torch.randn(1, 3, 64, 64)
    expected = maps(ref, x)
    ref.locality_injection()  # the authors' convert.py
    torch.save(ref.state_dict(), tmp_path / 'RepMLPNet-deploy.pth')
    model = load(tmp_path / 'RepMLPNet-deploy.pth', deploy=True)
    for ours, theirs in zip(maps(model, x), expected):
        assert relative_error(ours, theirs) < 1e-5
    with pytest.raises(CheckpointError, match='holds the deploy form.*set '
                       'deploy=True to load it'):
        load(tmp_path / 'RepMLPNet-deploy.pth')
    torch.save(reference().state_dict(), tmp_path / 'train.pth')
    with pytest.raises(CheckpointError, match='holds the training form.*'
                       'call switch_to_deploy'):
        load(tmp_path / 'train.pth', deploy=True)


def test_another_variant_is_refused_naming_both(tmp_path):
    torch.save(reference().state_dict(), tmp_path / 'tiny.pth')
    other = {**TINY, 'patch_sizes': (8, 4, 2, 1)}
    with pytest.raises(CheckpointError, match=(
            r"holds arch depths=\(1, 1, 2, 1\).*patch_sizes=\(16, 8, 4, 2\)"
            r".*the backbone is depths=.*patch_sizes=\(8, 4, 2, 1\)")):
        load(tmp_path / 'tiny.pth', arch=other)


# What the stages and arguments mean here.

@pytest.mark.parametrize('frozen', [-1, 0, 1, 2, 4])
def test_frozen_stages(frozen):
    model = RepMLPNet(TINY, frozen_stages=frozen, out_norm=True).train()
    assert {p.requires_grad for p in model.conv_embedding.parameters()} == \
        {frozen < 0}
    for i, stage in enumerate(model.stages):
        assert {p.requires_grad for p in stage.parameters()} == \
            {i >= frozen}, i
        assert getattr(model, f'norm{i}').weight.requires_grad == (i >= frozen)
    for i, embed in enumerate(model.embeds):  # before stage i + 1
        assert embed.conv.weight.requires_grad == (i + 1 >= frozen)
    assert model.conv_embedding.bn.training == (frozen < 0)


def test_syncbn_and_bad_arguments():
    sync = RepMLPNet(TINY, norm_cfg=dict(type='SyncBN'))
    assert not any(type(m) is nn.BatchNorm2d for m in sync.modules())
    with pytest.raises(ArchError, match='multiple of its sharesets'):
        RepMLPNet({**TINY, 'sharesets': (1, 3, 4, 8)})
