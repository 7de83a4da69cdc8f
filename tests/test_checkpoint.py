import argparse
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from conftest import ROOT, randomize_norms
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint
from reference_hire_mlp import ReferenceHireMLP

import mmhire  # noqa: F401  (registers the runner-checkpoint allowlist)
from mmhire.checkpoint import CheckpointError
from mmhire.models import HireMLP


def released_file(path, arch='tiny', seed=0):
    """A file laid out like the authors' releases, with their names."""
    torch.manual_seed(seed)
    model = randomize_norms(ReferenceHireMLP(arch))
    ema = {k: v + 1 if v.is_floating_point() else v
           for k, v in model.state_dict().items()}
    torch.save({'model': model.state_dict(), 'model_ema': ema,
                'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-3}]},
                'lr_scheduler': {'base_lr': 1e-3}, 'epoch': 299,
                'args': argparse.Namespace(model=f'hire_mlp_{arch}', lr=1e-3,
                                           drop_path=0.1, input_size=224)},
               path)
    return model


def pretrained(path, **kwargs):
    return HireMLP('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                         **kwargs))


def test_released_file_with_namespace_loads_exactly(tmp_path):
    reference = released_file(tmp_path / 'hire_mlp_tiny.pth').eval()
    backbone = pretrained(tmp_path / 'hire_mlp_tiny.pth')
    backbone.init_weights()
    backbone.eval()
    # Every released tensor arrives unchanged ...
    released = reference.state_dict()
    ours = backbone.state_dict()
    assert torch.equal(ours['stages.2.3.hire.branch_w.fc1.weight'],
                       released['network.4.3.attn.mlp_w1.weight'])
    assert torch.equal(ours['downsamples.1.bn.running_var'],
                       released['network.3.norm.running_var'])
    # ... and the network computes what the released one does.
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        theirs = reference.forward_features(x)
        expected = [getattr(backbone, f'norm{i}')(o)
                    for i, o in enumerate(theirs)]
        for out, ref in zip(backbone(x), expected):
            assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_load_reports_one_line(tmp_path):
    released_file(tmp_path / 'r.pth')
    from mmhire.checkpoint import load_pretrained
    message = load_pretrained(HireMLP('tiny', out_indices=(1, 2)),
                              tmp_path / 'r.pth')
    assert 'loaded 408 tensors' in message  # 415 minus the classifier's 7
    assert 'released ImageNet checkpoint, model weights' in message
    assert 'no backbone tensor missing' in message
    assert 'fresh per-output norms: norm1, norm2' in message


def test_ema_weights_on_request(tmp_path):
    reference = released_file(tmp_path / 'r.pth')
    backbone = pretrained(tmp_path / 'r.pth', use_ema=True)
    backbone.init_weights()
    assert torch.equal(backbone.stem.conv.weight,
                       reference.patch_embed.proj.weight + 1)
    torch.save({'model': reference.state_dict()}, tmp_path / 'no_ema.pth')
    with pytest.raises(CheckpointError, match='no model_ema'):
        pretrained(tmp_path / 'no_ema.pth', use_ema=True).init_weights()


def test_bare_and_prefixed_state_dicts(tmp_path):
    source = randomize_norms(HireMLP('tiny'))
    torch.save(source.state_dict(), tmp_path / 'bare.pth')
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in
                               source.state_dict().items()} |
                {'neck.lateral.weight': torch.ones(2)}},
               tmp_path / 'detector.pth')
    for name in ('bare.pth', 'detector.pth'):
        backbone = pretrained(tmp_path / name)
        backbone.init_weights()
        for key, value in source.state_dict().items():
            assert torch.equal(backbone.state_dict()[key], value), key


def test_wrong_arch_is_refused_naming_both(tmp_path):
    released_file(tmp_path / 'tiny.pth')
    backbone = HireMLP('small', init_cfg=dict(type='Pretrained',
                                              checkpoint=str(tmp_path / 'tiny.pth')))
    before = backbone.stem.conv.weight.clone()
    with pytest.raises(CheckpointError,
                       match="holds arch 'tiny', the backbone is 'small'"):
        backbone.init_weights()
    assert torch.equal(before, backbone.stem.conv.weight)


def test_unrelated_file_is_refused(tmp_path):
    torch.save({'state_dict': nn.Conv2d(3, 8, 3).state_dict()},
               tmp_path / 'other.pth')
    with pytest.raises(CheckpointError, match='uninitialised'):
        pretrained(tmp_path / 'other.pth').init_weights()
    with pytest.raises(CheckpointError, match='does not exist'):
        pretrained(tmp_path / 'missing.pth').init_weights()


class RunsCode:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker, how):
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == 'system':
            return os.system, (f'touch {self.marker}', )
        # A disguised call: getattr is allowed, but only for HistoryBuffer's
        # statistics methods.
        return getattr, (HistoryBuffer, 'update')


@pytest.mark.parametrize('how,named', [('system', r'posix\.system'),
                                       ('getattr', 'getattr')])
def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path, how, named):
    marker = tmp_path / 'pwned'
    torch.save({'model': {}, 'args': RunsCode(marker, how)},
               tmp_path / 'evil.pth')
    with pytest.raises(CheckpointError, match=f'refused.*{named}'):
        pretrained(tmp_path / 'evil.pth').init_weights()
    assert not marker.exists()


class TinyClassifier(BaseModel):

    def __init__(self, arch):
        super().__init__()
        self.backbone = HireMLP(arch)
        self.head = nn.Linear(64, 2)

    def forward(self, inputs, labels, mode='loss'):
        logits = self.head(self.backbone(inputs)[-1].mean((2, 3)))
        return dict(loss=nn.functional.cross_entropy(logits, labels))


class Noise(torch.utils.data.Dataset):

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return dict(inputs=torch.randn(3, 64, 64), labels=i % 2)


def test_runner_checkpoints_load_under_weights_only(tmp_path, tiny_arch):
    runner = Runner(
        model=TinyClassifier(tiny_arch), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=Noise(), batch_size=2,
                              sampler=dict(type='DefaultSampler'),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1)))
    runner.train()
    path = tmp_path / 'epoch_1.pth'
    # mmengine's own loader (resume, load_from, test.py) ...
    fresh = TinyClassifier(tiny_arch)
    load_checkpoint(fresh, str(path))
    trained = runner.model.state_dict()
    assert all(torch.equal(v, trained[k])
               for k, v in fresh.state_dict().items())
    # ... and the backbone's Pretrained init, from the backbone. prefix.
    backbone = HireMLP(tiny_arch, init_cfg=dict(type='Pretrained',
                                                checkpoint=str(path)))
    backbone.init_weights()
    assert torch.equal(backbone.stem.conv.weight,
                       trained['backbone.stem.conv.weight'])


def test_convert_checkpoint_tool(tmp_path):
    reference = released_file(tmp_path / 'hire_mlp_tiny.pth')
    result = subprocess.run(
        [sys.executable, str(ROOT / 'tools/convert_checkpoint.py'),
         str(tmp_path / 'hire_mlp_tiny.pth'), str(tmp_path / 'clean.pth')],
        capture_output=True, text=True, check=True)
    assert "arch 'tiny'" in result.stdout
    assert '408 backbone tensors' in result.stdout
    assert 'dropped args, epoch, lr_scheduler, optimizer' in result.stdout
    clean = torch.load(tmp_path / 'clean.pth', weights_only=True)
    assert clean['state_dict']['stages.2.3.hire.branch_w.fc1.weight'].equal(
        reference.network[4][3].attn.mlp_w1.weight)
    backbone = pretrained(tmp_path / 'clean.pth')
    backbone.init_weights()
    assert torch.equal(backbone.downsamples[2].bn.running_var,
                       reference.network[5].norm.running_var)
