"""The backbone contract: what every backbone that mmhire registers does,
tested once for all of them, each on its tiny arch from cases.py. A new
backbone gets these tests by being registered and having a case; what is
particular to one backbone stays in its own test file."""
import argparse
import copy
import datetime
import importlib.util
import inspect
import itertools
import math
import os
import random
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
from cases import CASES
from conftest import (ROOT, bn_state, check_with_cp_matches,
                      max_relative_error, pretrained, randomize_norms,
                      run_tool)
from mmengine.registry import DefaultScope
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

import mmhire
from mmhire.errors import ArchError, CheckpointError, DeployError, InputError
from mmhire.models import BACKBONES, backbone_names, fused_ops

NAMES = backbone_names()


@pytest.fixture(params=NAMES)
def backbone(request):
    """A registered backbone class and its case."""
    cls = next(b for b in BACKBONES if b.__name__ == request.param)
    if request.param not in CASES:
        pytest.fail(f'{request.param} has no case in tests/cases.py: add '
                    'its tiny arch there.')
    return cls, CASES[request.param]


def released_file(cls, case, path, seed=0):
    """A file as the authors' training run leaves it (timm's layout: the
    weights, their EMA, the optimizer and the pickled ``args``), from a
    reference with non-trivial BatchNorms. Returns the reference."""
    torch.manual_seed(seed)
    reference = randomize_norms(case.reference()).eval()
    weights = reference.state_dict()
    torch.save({'model': weights,
                'model_ema': {k: v + 1 if v.is_floating_point() else v
                              for k, v in weights.items()},
                'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-3}]},
                'epoch': 299, 'args': argparse.Namespace(
                    model=cls.__name__, lr=1e-3, input_size=224)}, path)
    return reference


def test_every_backbone_is_exported_and_has_a_case():
    assert set(NAMES) <= set(mmhire.__all__)
    assert set(NAMES) <= set(CASES)


def test_four_maps_at_their_strides_at_odd_sizes(backbone):
    cls, case = backbone
    model = cls(case.arch).eval()
    smallest = model.min_input_size
    for h, w in [(64, 96), (97, 131), (smallest, smallest + 1)]:
        with torch.no_grad():
            outs = model(torch.randn(2, 3, h, w))
        assert [tuple(o.shape) for o in outs] == [
            (2, c, a, b) for c, a, b in zip(
                model.map_channels, model.map_sizes(h), model.map_sizes(w))]
        assert all(o.is_contiguous() for o in outs)  # plain NCHW
    assert [64 // s for s in model.map_sizes(64)] == [4, 8, 16, 32]


def test_out_indices_and_bad_arguments(backbone):
    cls, case = backbone
    model = cls(case.arch, out_indices=(3, 1))
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == model.out_channels == [
        model.map_channels[1], model.map_channels[3]]
    for kwargs, message in [
            (dict(out_indices=(0, 4)), 'subset of 0..3'),
            (dict(out_indices=('0', )), r"subset of 0..3, got \('0',\)"),
            (dict(out_indices=None), 'subset of 0..3, got None'),
            (dict(frozen_stages=5), 'frozen_stages must be in -1..4'),
            (dict(frozen_stages='1'), "in -1..4, got '1'"),
            (dict(frozen_stages=1.5), 'in -1..4, got 1.5'),
            (dict(frozen_stages=None), 'in -1..4, got None')]:
        with pytest.raises(ArchError, match=message):
            cls(case.arch, **kwargs)
    # numpy integers and arrays, as a config computes them, are accepted
    numpy_arch = {k: np.array(v) for k, v in case.arch.items()}
    model = cls(numpy_arch, out_indices=np.array([1, 2]),
                frozen_stages=np.int64(1))
    assert model.arch == cls(case.arch).arch and model.out_indices == (1, 2)
    with pytest.raises(InputError, match='expected a floating-point tensor'):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    zoo = ', '.join(repr(name) for name in cls.arch_zoo)
    with pytest.raises(ArchError, match=f"unknown arch 'huge'.*{zoo}"):
        cls('huge')
    with pytest.raises(ArchError, match='exactly the keys'):
        cls({k: v for k, v in list(case.arch.items())[1:]})
    with pytest.raises(ArchError, match='must be a dict'):
        cls([case.arch])
    assert cls(next(iter(cls.arch_zoo)).upper()).arch == \
        cls(next(iter(cls.arch_zoo))).arch  # any case


def test_a_partial_pyramid_gives_the_same_maps_and_deploys(backbone):
    cls, case = backbone
    full = randomize_norms(cls(case.arch)).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = full(x)
    for out_indices in [(0, ), (1, 2)]:
        model = cls(case.arch, out_indices=out_indices)
        model.load_state_dict({k: full.state_dict()[k]
                               for k in model.state_dict()})
        model.switch_to_deploy()
        with torch.no_grad():
            outs = model(x)
        assert max_relative_error(
            outs, [expected[i] for i in out_indices]) < 1e-5


def test_too_small_or_wrong_inputs_are_clear_errors(backbone):
    cls, case = backbone
    model = cls(case.arch).eval()
    size = model.min_input_size
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
        if size > 1:
            with pytest.raises(InputError, match=f'at least {size}x{size}'):
                model(torch.randn(1, 3, size - 1, 64))
        with pytest.raises(InputError, match=r'expected an \(N, 3, H, W\)'):
            model(torch.randn(1, 1, 64, 64))


@pytest.mark.parametrize('frozen', [0, 2])
def test_frozen_stages(backbone, frozen):
    cls, case = backbone
    model = cls(case.arch, frozen_stages=frozen).train()
    frozen_modules = model.frozen_modules()
    assert frozen_modules
    before = [bn_state(m) for m in frozen_modules]
    sum(o.sum() for o in model(torch.randn(2, 3, 64, 64))).backward()
    for module, stats in zip(frozen_modules, before):
        assert not module.training
        assert all(not p.requires_grad and p.grad is None
                   for p in module.parameters())
        after = bn_state(module)
        assert all(torch.equal(stats[k], after[k]) for k in stats)
    frozen_params = {id(p) for m in frozen_modules for p in m.parameters()}
    trainable = [p for p in model.parameters() if id(p) not in frozen_params]
    assert trainable and all(p.requires_grad for p in trainable)
    assert any(p.grad is not None for p in trainable)


def test_norm_eval_keeps_every_batchnorm_in_eval_mode(backbone):
    cls, case = backbone
    model = cls(case.arch, norm_eval=True).train()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert norms and not any(m.training for m in norms)
    assert any(m.training for m in model.modules()
               if not isinstance(m, _BatchNorm))


def test_with_cp_equals_without(backbone):
    cls, case = backbone
    check_with_cp_matches(cls(case.arch).train(), torch.randn(2, 3, 64, 96))


def saved_activation_bytes(model, x):
    """Bytes of the tensors (other than parameters) that a training forward
    of ``model`` keeps for its backward pass."""
    parameters = {p.data_ptr() for p in model.parameters()}
    saved = {}

    def pack(tensor):
        if tensor.data_ptr() not in parameters:
            saved[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outs = model(x)
    sum(o.sum() for o in outs).backward()
    return sum(saved.values())


def test_with_cp_keeps_at_most_half_the_activations(backbone):
    # With a frozen stem, the first stage's input needs no gradient; its
    # blocks are checkpointed all the same.
    cls, case = backbone
    x = torch.randn(2, 3, 128, 128)
    plain, checkpointed = (
        saved_activation_bytes(cls(case.arch, frozen_stages=0,
                                   with_cp=with_cp).train(), x)
        for with_cp in (False, True))
    assert checkpointed <= plain / 2, (checkpointed, plain)


def _ddp_worker(rank, name, module, port):
    """Rank ``rank`` of two gloo processes: three DDP training steps of the
    backbone ``name`` for each of three ``out_indices``."""
    importlib.import_module(module)  # where a plugin registers it
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=120))
    cls = next(b for b in BACKBONES if b.__name__ == name)
    for out_indices in [(0, 1, 2), (1, 2), (0, 1, 2, 3)]:
        torch.manual_seed(rank)
        model = DistributedDataParallel(
            cls(CASES[name].arch, out_indices=out_indices).train())
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        for _ in range(3):
            outs = model(torch.randn(2, 3, 64, 64))
            sum(o.square().mean() for o in outs).backward()
            optimizer.step()
            optimizer.zero_grad()
    dist.barrier()
    dist.destroy_process_group()
    sys.stderr.flush()
    os._exit(0)  # no interpreter teardown under gloo's threads (engine.py)


def test_ddp_trains_whatever_the_out_indices(backbone, capfd):
    # Stages that no output needs are not built: DDP would wait for their
    # gradients. The weights are laid out as their gradients come.
    cls, case = backbone
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    torch.multiprocessing.start_processes(
        _ddp_worker, args=(cls.__name__, case.module, port), nprocs=2,
        start_method='spawn')
    assert 'Grad strides do not match' not in capfd.readouterr().err


@pytest.mark.parametrize('deploy', [False, True], ids=['train', 'deploy'])
def test_float16_at_detection_size(backbone, deploy):
    # Every norm shifted up: activations of mean above 1, where a float16
    # sum over a stride-4 map of 1024x1024 (65536 tokens) overflows.
    cls, case = backbone
    model = randomize_norms(cls(case.arch)).eval()
    for norm in model.modules():
        if isinstance(norm, (_BatchNorm, torch.nn.GroupNorm,
                             torch.nn.LayerNorm)) and norm.bias is not None:
            norm.bias.data += 2
    if deploy:
        model.switch_to_deploy()
    with torch.no_grad():
        outs = model.half()(torch.randn(1, 3, 1024, 1024).half() + 1)
    assert outs[0].float().mean() > 1
    assert all(o.dtype == torch.float16 and o.isfinite().all() for o in outs)


def test_bfloat16_autocast_training(backbone):
    cls, case = backbone
    model = randomize_norms(cls(case.arch)).train()
    reference = copy.deepcopy(model)
    x = torch.randn(2, 3, 64, 96)
    torch.manual_seed(1)  # the same drop-path draws
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(x)
    sum(o.float().square().mean() for o in outs).backward()
    torch.manual_seed(1)
    expected = reference(x)
    assert all(o.dtype == torch.bfloat16 for o in outs)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.isfinite().all() for g in grads)
    for out, want in zip(outs, expected):
        assert (out.float() - want).norm() / want.norm() < 0.05


@pytest.mark.parametrize('fused', [True, False], ids=['fused', 'plain'])
def test_deploy_form_equals_eval_mode(backbone, fused, monkeypatch):
    cls, case = backbone
    if not fused:  # the path CUDA takes
        monkeypatch.setattr(fused_ops, '_POINTWISE', None)
    model = randomize_norms(cls(case.arch)).eval()
    deployed = copy.deepcopy(model)
    deployed.switch_to_deploy()
    assert deployed.deploy
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        assert max_relative_error(deployed(x), model(x)) < 1e-5
    if cls.deploy_trains:
        deployed.train()
    else:
        with pytest.raises(DeployError, match='cannot be trained'):
            deployed.train()


def test_released_file_loads_exactly(backbone, tmp_path):
    cls, case = backbone
    path = tmp_path / 'released.pth'
    reference = released_file(cls, case, path)
    model = pretrained(cls, case.arch, path, **case.kwargs)
    x = torch.randn(1, 3, *case.size)
    with torch.no_grad():
        assert max_relative_error(model(x), reference.dense_maps(x)) < 1e-5
    classifier = [k for k in reference.state_dict() if k.startswith('head')]
    message = model.load_pretrained(path)  # one line, saying all of it
    assert '\n' not in message
    assert f'{cls.__name__}: loaded {len(model.state_dict())} tensors from ' \
        f'{path} (released ImageNet checkpoint, model weights); no backbone ' \
        "tensor missing; skipped the classifier's " in message
    assert classifier[0] in message
    # A backbone without the last stage loads the file all the same.
    truncated = pretrained(cls, case.arch, path, out_indices=(0, 1, 2),
                           **case.kwargs)
    with torch.no_grad():
        assert max_relative_error(truncated(x),
                                  tuple(reference.dense_maps(x))[:3]) < 1e-5
    assert 'not needed for out_indices (0, 1, 2): ' in \
        truncated.load_pretrained(path)
    ema = pretrained(cls, case.arch, path, use_ema=True, **case.kwargs)
    changed = [torch.equal(a, b + 1) for a, b in zip(
        ema.parameters(), model.parameters())]
    assert changed and all(changed)


def test_another_networks_file_is_refused_naming_it(backbone, tmp_path):
    cls, case = backbone
    for other in BACKBONES:
        if other is cls:
            continue
        path = tmp_path / f'{other.__name__}.pth'
        released_file(other, CASES[other.__name__], path)
        model = cls(case.arch, init_cfg=dict(type='Pretrained',
                                             checkpoint=str(path)))
        before = copy.deepcopy(model.state_dict())
        with pytest.raises(CheckpointError, match=(
                f'holds a {re.escape(other.paper_name)} .* network, not a '
                f'{re.escape(cls.paper_name)} one')):
            model.init_weights()
        assert all(torch.equal(v, before[k])
                   for k, v in model.state_dict().items())


def test_convert_checkpoint_tool(backbone, tmp_path, capsys):
    cls, case = backbone
    source = tmp_path / 'released.pth'
    target = tmp_path / 'folder/to/make/clean.pth'  # made by the tool
    released_file(cls, case, source)
    spec = importlib.util.spec_from_file_location(
        'convert_checkpoint', ROOT / 'tools/convert_checkpoint.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main([str(source), str(target)])
    printed = capsys.readouterr().out
    assert f'(released ImageNet checkpoint, model weights); ' \
        f'{cls.paper_name}, arch' in printed
    assert 'dropped args, epoch, optimizer, ' in printed
    clean = torch.load(target, weights_only=True)
    assert clean['meta']['network'] == cls.__name__
    assert not any(k.startswith('head.') for k in clean['state_dict'])
    converted = pretrained(cls, case.arch, target, **case.kwargs)
    original = pretrained(cls, case.arch, source, **case.kwargs)
    assert all(torch.equal(a, b) for a, b in zip(
        converted.state_dict().values(), original.state_dict().values()))


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_registered_in_mmdet_and_mmseg(backbone, scope):
    cls, case = backbone
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    with DefaultScope.overwrite_default_scope(scope):
        assert registry.get(cls.__name__) is cls
        built = registry.build(dict(type=cls.__name__, arch=case.arch,
                                    out_indices=(1, 2)))
    assert type(built) is cls and built.out_indices == (1, 2)


def test_a_stock_mmdet_config_with_the_backbone_trains(backbone, small_coco,
                                                       tmp_path):
    # mmdet's Faster R-CNN as it ships, backbone swapped; only the data (the
    # generated shapes at a small size) and the length of the run differ.
    cls, case = backbone
    channels = cls(case.arch).out_channels
    config = tmp_path / f'faster_rcnn_{cls.__name__}.py'
    config.write_text(f'''
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports={sorted({'mmhire', case.module})},
                      allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='{cls.__name__}', arch={case.arch}),
    neck=dict(in_channels={channels}),
    roi_head=dict(bbox_head=dict(num_classes=3)))
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(
        data_root='data/synthetic_coco/', ann_file='annotations/train.json',
        data_prefix=dict(img='train/'), indices=2,
        metainfo=dict(classes=('circle', 'square', 'triangle')),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', with_bbox=True),
                  dict(type='Resize', scale=(320, 320), keep_ratio=True),
                  dict(type='PackDetInputs')]))
train_cfg = dict(max_epochs=1)
val_cfg = val_dataloader = val_evaluator = None
default_hooks = dict(logger=dict(interval=1))
''')
    result = run_tool(['tools/train.py', str(config), '--work-dir',
                       str(tmp_path / 'work_dir')], cwd=small_coco)
    assert f'{cls.__name__}: no pretrained weights given' in result.stdout
    assert 'Epoch(train) [1][1/1]' in result.stdout
    assert re.search(r'loss_cls: [\d.]+', result.stdout)


def test_a_stock_mmseg_config_with_the_backbone_trains(backbone, small_ade,
                                                       tmp_path):
    # mmseg's FCN as it ships, backbone swapped; only the data (the generated
    # regions) and the length of the run differ.
    cls, case = backbone
    channels = cls(case.arch).out_channels
    config = tmp_path / f'fcn_{cls.__name__}.py'
    config.write_text(f'''
_base_ = 'mmseg::fcn/fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py'
custom_imports = dict(imports={sorted({'mmhire', case.module})},
                      allow_failed_imports=False)
model = dict(
    pretrained=None, data_preprocessor=dict(size=(128, 128)),
    backbone=dict(_delete_=True, type='{cls.__name__}', arch={case.arch}),
    decode_head=dict(in_channels={channels[3]}, num_classes=5),
    auxiliary_head=dict(in_channels={channels[2]}, num_classes=5))
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(
        type='BaseSegDataset', data_root='data/synthetic_ade',
        img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True,
        metainfo=dict(classes=('a', 'b', 'c', 'd', 'e')),
        data_prefix=dict(img_path='images/training',
                         seg_map_path='annotations/training'),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', reduce_zero_label=True),
                  dict(type='PackSegInputs')]))
train_cfg = dict(max_iters=1, val_interval=10)
val_cfg = val_dataloader = val_evaluator = None
default_hooks = dict(logger=dict(interval=1))
''')
    result = run_tool(['tools/train.py', str(config), '--work-dir',
                       str(tmp_path / 'work_dir')], cwd=small_ade)
    assert 'Iter(train) [1/1]' in result.stdout
    assert re.search(r'decode.loss_ce: [\d.]+', result.stdout)


def test_loading_does_not_depend_on_the_registration_order(tmp_path):
    files = {}
    for cls in BACKBONES:
        case = CASES[cls.__name__]
        files[cls] = (tmp_path / f'{cls.__name__}.pth', case)
        released_file(cls, case, files[cls][0])
    orders = list(itertools.permutations(BACKBONES))
    random.Random(0).shuffle(orders)
    original = list(BACKBONES)
    try:
        for order in orders[:6]:
            BACKBONES[:] = order
            for cls, (path, case) in files.items():
                model = pretrained(cls, case.arch, path, **case.kwargs)
                assert 'no backbone tensor missing' in model.load_pretrained(
                    path)
    finally:
        BACKBONES[:] = original


def contract_tests_per_backbone():
    """How many tests above each backbone gets."""
    count = 0
    for name, test in globals().items():
        if name.startswith('test_') and \
                'backbone' in inspect.signature(test).parameters:
            count += math.prod(len(mark.args[1]) for mark in getattr(
                test, 'pytestmark', []) if mark.name == 'parametrize')
    return count


def test_a_toy_fourth_backbone_gets_the_contract():
    """Registering a backbone (tests/toy_backbone.py, a few layers on the
    base class) and giving it a case is all the contract test needs."""
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', __file__, '-n', '0', '-p',
         'toy_backbone', '-k', 'ToyMLP', '-q', '-p', 'no:cacheprovider'],
        capture_output=True, text=True, cwd=ROOT,
        env={**os.environ,
             'PYTHONPATH': os.pathsep.join([str(ROOT / 'tests'), str(ROOT)])})
    assert result.returncode == 0, result.stdout[-3000:]
    assert f'{contract_tests_per_backbone()} passed' in result.stdout, \
        result.stdout[-3000:]
