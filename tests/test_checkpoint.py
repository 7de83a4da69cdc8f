"""Safe loading, whatever the backbone: the containers a file comes in,
refusal of anything that would run code, and the checkpoints mmengine's
runner writes, under ``weights_only=True``."""
import os

import pytest
import torch
import torch.nn as nn
from cases import HIRE_MLP as TINY
from conftest import pretrained, randomize_norms
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint

import mmhire  # noqa: F401  (registers the runner-checkpoint allowlist)
from mmhire.checkpoint import CheckpointError
from mmhire.models import HireMLP


def pretrained_tiny(path):
    return pretrained(HireMLP, TINY, path)


def test_bare_and_prefixed_state_dicts(tmp_path):
    source = randomize_norms(HireMLP(TINY))
    torch.save(source.state_dict(), tmp_path / 'bare.pth')
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in
                               source.state_dict().items()} |
                {'neck.lateral.weight': torch.ones(2)}},
               tmp_path / 'detector.pth')
    for name in ('bare.pth', 'detector.pth'):
        backbone = pretrained_tiny(tmp_path / name)
        for key, value in source.state_dict().items():
            assert torch.equal(backbone.state_dict()[key], value), key


def test_unrelated_file_is_refused(tmp_path):
    torch.save({'state_dict': nn.Conv2d(3, 8, 3).state_dict()},
               tmp_path / 'other.pth')
    with pytest.raises(CheckpointError, match='uninitialised'):
        pretrained_tiny(tmp_path / 'other.pth')
    with pytest.raises(CheckpointError, match='does not exist'):
        pretrained_tiny(tmp_path / 'missing.pth')


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
        pretrained_tiny(tmp_path / 'evil.pth')
    assert not marker.exists()


class TinyClassifier(BaseModel):

    def __init__(self, arch):
        super().__init__()
        self.backbone = HireMLP(arch)
        self.head = nn.Linear(TINY['channels'][-1], 2)

    def forward(self, inputs, labels, mode='loss'):
        logits = self.head(self.backbone(inputs)[-1].mean((2, 3)))
        return dict(loss=nn.functional.cross_entropy(logits, labels))


class Noise(torch.utils.data.Dataset):

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return dict(inputs=torch.randn(3, 64, 64), labels=i % 2)


def test_runner_checkpoints_load_under_weights_only(tmp_path):
    runner = Runner(
        model=TinyClassifier(TINY), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=Noise(), batch_size=2,
                              sampler=dict(type='DefaultSampler'),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1)))
    runner.train()
    path = tmp_path / 'epoch_1.pth'
    # mmengine's own loader (resume, load_from, test.py) ...
    fresh = TinyClassifier(TINY)
    load_checkpoint(fresh, str(path))
    trained = runner.model.state_dict()
    assert all(torch.equal(v, trained[k])
               for k, v in fresh.state_dict().items())
    # ... and the backbone's Pretrained init, from the backbone. prefix.
    backbone = HireMLP(TINY, init_cfg=dict(type='Pretrained',
                                                checkpoint=str(path)))
    backbone.init_weights()
    assert torch.equal(backbone.stem.conv.weight,
                       trained['backbone.stem.conv.weight'])


def test_ema_weights_asked_for_but_missing(tmp_path):
    torch.save({'model': HireMLP(TINY).state_dict()}, tmp_path / 'no_ema.pth')
    with pytest.raises(CheckpointError, match='has no EMA weights'):
        pretrained(HireMLP, TINY, tmp_path / 'no_ema.pth', use_ema=True)


@pytest.mark.parametrize('content', [
    b'config: a text file, which a pickle reads as GLOBAL "onfig:"\n',
    b'{"json": 1}\n', b'q', b'PK\x03\x04 a broken zip'],
    ids=['yaml', 'json', 'opcode', 'zip'])
def test_a_file_that_is_not_a_checkpoint_is_said_to_be_so(tmp_path,
                                                          content):
    """Before torch reads it as a pickle: no refused-pickle message with
    torch's advice pasted in, no IndexError."""
    path = tmp_path / 'notes.pth'
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as refused:
        pretrained_tiny(path)
    message = str(refused.value)
    assert 'not a file written by torch.save' in message
    assert 'pickled' not in message and 'weights_only' not in message
