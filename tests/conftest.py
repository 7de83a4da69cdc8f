"""Helpers every test file shares, and the generated datasets."""
import copy
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the reference/ transcriptions


def pytest_configure(config):
    """Under pytest-xdist (``-n auto``: a worker per core), one thread per
    worker and per tool it runs: threads beyond the cores only wait."""
    if os.environ.get('PYTEST_XDIST_WORKER'):
        os.environ['OMP_NUM_THREADS'] = '1'
        torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """The demos (minutes each) first, so that no worker starts one while
    the others have finished."""
    items.sort(key=lambda item: item.get_closest_marker('slow') is None)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def relative_error(a, b):
    """Largest absolute difference over the largest magnitude of ``b``."""
    return ((a - b).abs().max() / b.abs().max()).item()


def max_relative_error(ours, theirs):
    return max(relative_error(a, b) for a, b in zip(ours, theirs))


def randomize_norms(model):
    """Give every BatchNorm non-trivial affine parameters and statistics, so
    that a mix-up of norms cannot go unnoticed."""
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def bn_state(module):
    """Copies of the BatchNorm statistics inside ``module``."""
    return {k: v.clone() for k, v in module.state_dict().items()
            if 'running' in k or 'num_batches' in k}


def pretrained(backbone, arch, path, **kwargs):
    """``backbone`` of ``arch`` initialised from the checkpoint at ``path``
    through ``init_cfg``, as a config does it, in eval mode. ``use_ema`` goes
    to the init_cfg, the other keywords to the constructor."""
    init_cfg = dict(type='Pretrained', checkpoint=str(path))
    if 'use_ema' in kwargs:
        init_cfg['use_ema'] = kwargs.pop('use_ema')
    model = backbone(arch, init_cfg=init_cfg, **kwargs)
    model.init_weights()
    return model.eval()


def check_with_cp_matches(plain, x):
    """A ``with_cp`` copy of ``plain`` (in train mode) gives the same
    outputs, input and parameter gradients (drop path included: the
    recomputation replays its draws), and updates the BatchNorm statistics
    once, not twice."""
    checkpointed = copy.deepcopy(plain)
    checkpointed.with_cp = True
    results = []
    for model in (plain, checkpointed):
        torch.manual_seed(1)  # the same drop-path draws
        inputs = x.clone().requires_grad_()
        outs = model(inputs)
        sum(o.square().mean() for o in outs).backward()
        results.append((outs, inputs.grad))
    (outs, grad), (cp_outs, cp_grad) = results
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(outs, cp_outs))
    assert torch.allclose(grad, cp_grad, atol=1e-6)
    for (name, a), b in zip(plain.named_parameters(),
                            checkpointed.parameters()):
        if a.grad is not None or b.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    for a, b in zip(plain.buffers(), checkpointed.buffers()):
        assert torch.equal(a, b)


# What a Python process reads once at its start: a run that changes one of
# these gets a process of its own.
_AT_START = ('PYTHON', 'OMP_', 'MKL_', 'KMP_', 'LD_', 'CUDA', 'TORCH')


class _ToolServer:
    """tests/tool_server.py, started on first use in each test process."""

    def __init__(self, env):
        self.env = env
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / 'tests/tool_server.py')], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self.env)
        self.pending = b''

    def serves(self, env):
        return self.process.poll() is None and all(
            env.get(k) == self.env.get(k) for k in {*env, *self.env}
            if k.startswith(_AT_START))

    def _answer(self, timeout):
        deadline = time.monotonic() + timeout
        while b'\n' not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.process.stdout], [], [],
                                              left)[0]:
                return None
            chunk = os.read(self.process.stdout.fileno(), 64)
            if not chunk:
                raise RuntimeError('tests/tool_server.py ended; run it by '
                                   'hand to see why')
            self.pending += chunk
        line, self.pending = self.pending.split(b'\n', 1)
        return int(line)

    def run(self, command, cwd, env, timeout):
        with tempfile.TemporaryDirectory() as outputs:
            out, err = Path(outputs, 'stdout'), Path(outputs, 'stderr')
            request = dict(script=command[1], args=command[2:], cwd=str(cwd),
                           env=env, stdout=str(out), stderr=str(err))
            self.process.stdin.write(json.dumps(request).encode() + b'\n')
            self.process.stdin.flush()
            pid = self._answer(600)  # the first run waits for the imports
            status = self._answer(timeout)
            if status is None:
                os.kill(pid, signal.SIGKILL)
                self._answer(60)
                raise subprocess.TimeoutExpired(command, timeout,
                                                out.read_text(),
                                                err.read_text())
            return subprocess.CompletedProcess(
                command, status, out.read_text(errors='replace'),
                err.read_text(errors='replace'))


_server = None


def _tool_server(env):
    """This process's tool server, if it can run a tool with ``env``."""
    global _server
    if _server is None or _server.process.poll() is not None:
        _server = _ToolServer({**os.environ, 'PYTHON': sys.executable})
    return _server if _server.serves(env) else None


def run_tool(args, cwd, env=None, check=True, timeout=600):
    """Run a tools/ script as a user would, from ``cwd``. A Python script
    runs in a child of tests/tool_server.py, which has the stack imported
    already, unless ``env`` changes what a process reads at its start."""
    script = str(ROOT / args[0])
    command = ['bash', script] if script.endswith('.sh') \
        else [sys.executable, script]
    command += list(args[1:])
    env = {**os.environ, 'PYTHON': sys.executable, **(env or {})}
    server = _tool_server(env) if command[0] == sys.executable else None
    if server:
        result = server.run(command, cwd, env, timeout)
    else:
        result = subprocess.run(command, cwd=cwd, capture_output=True,
                                text=True, timeout=timeout, env=env)
    if check and result.returncode:
        raise AssertionError(f'{args} failed:\n{result.stdout[-3000:]}\n'
                             f'{result.stderr[-3000:]}')
    return result


def refused(args, cwd, env=None):
    """Run a tool that must stop in one line: exit status 1 and no stack
    trace. Returns the result and the last line of its stderr."""
    result = run_tool(args, cwd, env=env, check=False)
    assert result.returncode == 1 and 'Traceback' not in result.stderr, \
        result.stderr[-3000:]
    return result, result.stderr.strip().splitlines()[-1]


# A config's name: {framework}_{backbone}_{size}[_conv5]_{schedule}[_{dataset}].
CONFIG_NAME = re.compile(r'(?P<framework>\w+?)_(?P<backbone>hire|convmlp|repmlp|'
                         r'wavemlp)_(?P<size>[a-z0-9]+)(?P<variant>_conv5)?_'
                         r'(?P<schedule>\dx|\d+k)(?P<dataset>_\w+)?')
# What a backbone's size changes in its config: the arch and what comes with
# it, and (anywhere in the model) the channels that follow.
BACKBONE_SIZE_KEYS = ('arch', 'drop_path_rate', 'init_cfg')


def config_groups(paths):
    """Configs by framework, backbone, variant and dataset: the configs of a
    group build the same model but for the backbone's size (and each
    schedule trains that model)."""
    groups = {}
    for path in paths:
        name = CONFIG_NAME.fullmatch(path.stem)
        assert name, f'{path.name} is not named as the README says'
        key = '{framework}_{backbone}'.format(**name.groupdict()) + \
            (name['variant'] or '') + (name['dataset'] or '')
        groups.setdefault(key, []).append(path)
    return groups


def _without_channels(node):
    if isinstance(node, dict):
        return {k: _without_channels(v) for k, v in node.items()
                if k != 'in_channels'}
    if isinstance(node, (list, tuple)):
        return [_without_channels(v) for v in node]
    return node


def without_size(model):
    """A model config without what the backbone's size decides."""
    model = _without_channels(model)
    for key in BACKBONE_SIZE_KEYS:
        model['backbone'].pop(key, None)
    return model


def check_on_meta(path, params):
    """A config through the tools' checks (the backbone's maps against the
    neck or heads) and built on the meta device; ``params``: whole-model
    parameters (M) to 0.06 M, by config name."""
    from mmhire.checks import on_meta
    from mmhire.engine import load_config
    cfg = load_config(str(path))
    model = on_meta(cfg, cfg.model)
    assert type(model.backbone).__name__ == cfg.model.backbone.type
    if path.stem in params:
        total = sum(p.numel() for p in model.parameters())
        assert abs(total / 1e6 - params[path.stem]) < 0.06


def smallest_of_group(paths):
    """The config of the smallest backbone of a group, built on the meta
    device, after checking that the others differ from it only in the
    backbone's size."""
    from mmhire.checks import on_meta
    from mmhire.engine import load_config
    configs = {path: load_config(str(path)) for path in paths}
    sizes = {path: sum(p.numel() for p in on_meta(
        cfg, cfg.model.backbone).parameters())
        for path, cfg in configs.items()}
    smallest = min(paths, key=sizes.get)
    model = without_size(configs[smallest].model.to_dict())
    for path, cfg in configs.items():
        assert without_size(cfg.model.to_dict()) == model, \
            f'{path.stem} differs from {smallest.stem} beyond the size'
    return smallest


@pytest.fixture(scope='session')
def small_coco(tmp_path_factory):
    """A working directory with a small generated COCO at the demo's path."""
    from mmhire.datasets.synthetic import make_coco_shapes
    cwd = tmp_path_factory.mktemp('coco')
    make_coco_shapes(cwd / 'data/synthetic_coco', num_train=24, num_val=8)
    return cwd


@pytest.fixture(scope='session')
def small_ade(tmp_path_factory):
    """A working directory with a small generated ADE20K at the demo's path."""
    from mmhire.datasets.synthetic import make_ade_shapes
    cwd = tmp_path_factory.mktemp('ade')
    make_ade_shapes(cwd / 'data/synthetic_ade', num_train=16, num_val=4)
    return cwd


@pytest.fixture(scope='session')
def trained_demo(small_ade):
    """The segmentation demo trained for 2 iterations on ``small_ade``:
    the working directory, the checkpoint and the training's output (its
    validation scores)."""
    demo = ROOT / 'configs/segmentation/demo/fpn_hire_tiny_synthetic.py'
    trained = run_tool(['tools/train.py', str(demo), '--work-dir',
                        'work_dirs/demo', '--cfg-options',
                        'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
                        'default_hooks.checkpoint.interval=2'], cwd=small_ade)
    return small_ade, 'work_dirs/demo/iter_2.pth', trained
