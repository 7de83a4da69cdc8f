"""ONNX export (tools/deployment): every backbone's segmentor, trained and
deploy forms, with symbolic batch and sizes; a detector's pyramid; float16;
the trained demo evaluated in ONNX Runtime as tools/test.py evaluates it;
and the one-line refusals."""
import re

import pytest
import torch
import torch.nn as nn
from cases import CASES
from conftest import ROOT, randomize_norms, refused, relative_error, run_tool
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

import mmhire.models
from mmhire.deployment import exported_part, export, run, session
from mmhire.errors import ExportError
from mmhire.models import backbone_names, switch_to_deploy

EXPORT = 'tools/deployment/export_onnx.py'
DEMOS = ROOT / 'configs/segmentation/demo'
SEGMENTORS = dict(  # each backbone's demo segmentor
    HireMLP='fpn_hire_tiny_synthetic', ConvMLP='fpn_convmlp_small_synthetic',
    WaveMLP='fpn_wavemlp_tiny_synthetic',
    RepMLPNet='upernet_repmlp_t256_synthetic_cityscapes')
DETECTOR = ROOT / 'configs/detection/demo/mask_rcnn_hire_tiny_synthetic.py'


def build(config, scope, **model):
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(dict(model=model))
    init_default_scope(scope)
    return randomize_norms(MODELS.build(cfg.model)).eval()


def small_segmentor(name):
    """The backbone's demo segmentor with the tiny arch of cases.py."""
    assert name in SEGMENTORS, f'{name}: add its demo segmentor to SEGMENTORS'
    arch = CASES[name].arch
    channels = getattr(mmhire.models, name)(arch).out_channels
    config = Config.fromfile(DEMOS / f'{SEGMENTORS[name]}.py').model
    heads = dict(neck=dict(in_channels=channels)) if config.get('neck') else \
        dict(decode_head=dict(in_channels=channels), auxiliary_head=dict(
            in_channels=channels[config.auxiliary_head.in_index]))
    return build(DEMOS / f'{SEGMENTORS[name]}.py', 'mmseg',
                 backbone=dict(arch=dict(_delete_=True, **arch)), **heads)


def logits(model, x):
    with torch.no_grad():
        return model.encode_decode(x, [dict(img_shape=x.shape[2:])])


@pytest.mark.parametrize('deploy', [False, True], ids=['trained', 'deploy'])
@pytest.mark.parametrize('name', backbone_names())
def test_segmentor_exports_for_every_size(name, deploy, tmp_path):
    model = small_segmentor(name)
    if deploy:
        switch_to_deploy(model)
    path = tmp_path / 'segmentor.onnx'
    export(exported_part(model), torch.randn(2, 3, 128, 160), path,
           dynamic=True)
    sess = session(path)
    for shape in (1, 3, 96, 224), (3, 3, 100, 130):
        x = torch.randn(shape)
        got, expected = run(sess, x)[0], logits(model, x)
        assert got.shape == expected.shape == (shape[0], 5 if name !=
                                               'RepMLPNet' else 19,
                                               *shape[2:])
        assert relative_error(got, expected) < 1e-4, shape


def test_detector_pyramid_and_float16(tmp_path):
    model = build(DETECTOR, 'mmdet')
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'det.pth')
    result = run_tool([EXPORT, str(DETECTOR), 'det.pth', '--out', 'det.onnx',
                       '--shape', '128', '160'], cwd=tmp_path)
    assert 'outputs p0 (1, 256, 32, 40), p1 (1, 256, 16, 20)' in \
        result.stdout
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        expected = model.extract_feat(x)
    got = run(session(tmp_path / 'det.onnx'), x)
    assert len(got) == len(expected) == 5
    for g, e in zip(got, expected):
        assert g.shape == e.shape and relative_error(g, e) < 1e-4
    # float16, deploy form, at a detection size: finite and close.
    half = run_tool([EXPORT, str(DETECTOR), 'det.pth', '--out', 'half.onnx',
                     '--shape', '800', '1216', '--fp16', '--deploy'],
                    cwd=tmp_path)
    assert re.search(r'float16\): input \(1, 3, 800, 1216\)', half.stdout)
    got = run(session(tmp_path / 'half.onnx'), torch.randn(1, 3, 800, 1216))
    assert all(torch.isfinite(g).all() for g in got)
    difference = float(re.search(r'difference ([\d.e+-]+)', half.stdout)[1])
    assert 1e-5 < difference < 1e-2  # float16, not float32


def test_the_demo_scores_in_onnx_runtime_as_in_pytorch(trained_demo):
    cwd, checkpoint, trained = trained_demo
    config = str(DEMOS / 'fpn_hire_tiny_synthetic.py')
    exported = run_tool([EXPORT, config, checkpoint, '--out', 'demo.onnx',
                         '--dynamic', '--deploy', '--shape', '128', '128'],
                        cwd=cwd)
    sizes = re.findall(r'at (\dx3x\d+x\d+): largest relative difference',
                       exported.stdout)
    assert sizes == ['2x3x128x128', '1x3x160x192'], exported.stdout
    tested = run_tool(['tools/deployment/test_onnx.py', config, 'demo.onnx'],
                      cwd=cwd)
    assert 'in ONNX Runtime (CPUExecutionProvider)' in tested.stdout
    ours = float(re.findall(r'mIoU: ([\d.]+)', tested.stdout)[-1])
    theirs = float(re.findall(r'mIoU: ([\d.]+)', trained.stdout)[-1])
    assert abs(ours - theirs) <= 0.1, (ours, theirs)


class ReadsValues(nn.Module):
    def forward(self, x):
        return x if x.mean() > 0 else -x


class WrapsBySize(nn.Module):
    """The modulus of a symbolic size, as a Python number: no ONNX form."""

    def forward(self, x):
        rows = (torch.arange(x.shape[2]) - 1) % x.shape[2]
        return x.index_select(2, rows)


@pytest.mark.parametrize('layer,says', [
    (ReadsValues, r'cannot export backbone\.stages\.1\.blocks\.0 '
                  r'\(ReadsValues\): GuardOnDataDependentSymNode: .*; '
                  r'torch\.export must trace that layer'),
    (WrapsBySize, r'cannot convert its aten\.remainder\.Scalar in '
                  r'backbone\.stages\.1\.blocks\.0 \(WrapsBySize\) to ONNX '
                  r'opset 18: TypeError: int\(\) argument')])
def test_a_layer_that_cannot_be_exported_is_named(layer, says, tmp_path):
    model = small_segmentor('ConvMLP')
    model.backbone.stages[1].blocks[0] = layer()
    with pytest.raises(ExportError, match=says) as error:
        export(exported_part(model), torch.randn(2, 3, 64, 64),
               tmp_path / 'x.onnx', dynamic=True)
    assert '\n' not in str(error.value) and not (tmp_path / 'x.onnx').exists()


def test_refusals_are_one_line(tmp_path):
    (tmp_path / 'onnxruntime.py').write_text(
        "raise ModuleNotFoundError(\"No module named 'onnxruntime'\")\n")
    for tool in (EXPORT, 'tools/deployment/test_onnx.py'):
        _, line = refused([tool, 'any.py', 'any.file', '--out', 'x'],
                          tmp_path, env=dict(PYTHONPATH=str(tmp_path)))
        assert line.endswith('onnxruntime cannot be imported. Fix: pip '
                             'install -e ".[deploy]" (or pip install '
                             'onnxruntime).'), line
    (tmp_path / 'onnxruntime.py').unlink()
    (tmp_path / 'backbone.py').write_text(
        "custom_imports = dict(imports=['mmhire'])\n"
        "default_scope = 'mmdet'\n"
        "model = dict(type='HireMLP', arch='tiny')\n")
    _, line = refused([EXPORT, 'backbone.py', 'any.pth', '--out', 'x.onnx'],
                      tmp_path)
    assert line == (
        "error: the config's model, HireMLP, is neither an mmseg segmentor "
        "nor an mmdet detector; export_onnx.py exports a whole segmentor, "
        "or a detector's backbone and neck."), line
    _, line = refused(['tools/deployment/test_onnx.py', str(DETECTOR),
                       'x.onnx'], tmp_path)
    assert 'test_onnx.py evaluates segmentors' in line
