"""ONNX export of what mmhire owns in a model, and the check of the file in
ONNX Runtime against PyTorch.

A segmentor goes in whole: from the normalized batch (``input``) to the
class logits at the batch's resolution (``logits``). A detector goes in as
its backbone and neck (``p0``, ``p1``, ...): its heads' post-processing
(NMS, RoI heads) belongs to the deploy tool that serves it. torch's dynamo
exporter writes the file (mmdeploy supports neither torch 2 nor its
exporter); a layer that it cannot take is named in one line.
"""
import contextlib
import importlib
import logging
import re
import types
import warnings

import numpy as np
import torch
import torch.export
import torch.nn as nn
import torch.nn.functional as F

from mmhire.dependencies import check_versions
from mmhire.errors import ExportError, MMHireError

OPSET = 18
# The largest relative difference from PyTorch's float32 outputs that a
# file may show: float32 computation, and float16 (--fp16).
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2}
PACKAGES = ('onnx', 'onnxscript', 'onnxruntime')


def require_onnx():
    """Stop in one line when the export or ONNX Runtime is not installed."""
    missing = []
    for name in PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MMHireError(
            f'ONNX export and testing need {", ".join(PACKAGES)}; '
            f'{" and ".join(missing)} cannot be imported. Fix: pip install '
            '-e ".[deploy]" (or pip install ' + ' '.join(missing) + ').')
    try:
        check_versions(extras=('deploy',))
    except ImportError as e:
        raise MMHireError(str(e).removeprefix('mmhire: ')) from None


class SegmentorLogits(nn.Module):
    """A segmentor from the normalized batch to its class logits at the
    batch's resolution: mmseg's ``encode_decode``, whose decode head
    resizes its logits to ``img_shape``."""

    def __init__(self, segmentor):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, input):
        return self.segmentor.encode_decode(
            input, [dict(img_shape=input.shape[2:])])


class FeaturePyramid(nn.Module):
    """A detector's backbone and neck: the maps of ``extract_feat``."""

    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def forward(self, input):
        return tuple(self.detector.extract_feat(input))


class OnnxEncodeDecode:
    """Stands in for a segmentor's ``encode_decode``: the exported file,
    in ONNX Runtime, on the same batch. The segmentor's own code does the
    rest (whole or sliding-window inference, cropping, resizing)."""

    def __init__(self, sess, num_classes):
        self.sess, self.num_classes = sess, num_classes

    def __call__(self, inputs, batch_img_metas):
        takes = self.sess.get_inputs()[0].shape
        if any(isinstance(t, int) and t != n
               for t, n in zip(takes, inputs.shape)):
            raise ExportError(
                f'the ONNX file takes batches of shape {tuple(takes)}, but '
                f'the test pipeline gives {tuple(inputs.shape)}; export it '
                'with --dynamic (or --shape for this size).')
        logits = run(self.sess, inputs)[0]
        if logits.dim() != 4 or logits.shape[1] != self.num_classes:
            raise ExportError(
                f'the ONNX file gives logits of shape {tuple(logits.shape)}, '
                f'but the config\'s decode head has {self.num_classes} '
                'classes; test the file with the config it was exported '
                'from.')
        return logits.to(inputs.device)


def _subclass(cls, module, name):
    try:
        base = getattr(importlib.import_module(module), name)
    except ImportError:  # mmdet or mmseg not installed
        return False
    return isinstance(cls, type) and issubclass(cls, base)


def kind_of(model_class):
    """'segmentor' or 'detector': what export_onnx.py can export."""
    if _subclass(model_class, 'mmseg.models.segmentors', 'BaseSegmentor'):
        return 'segmentor'
    if _subclass(model_class, 'mmdet.models.detectors', 'BaseDetector'):
        return 'detector'
    name = getattr(model_class, '__name__', model_class)
    raise MMHireError(
        f'the config\'s model, {name}, is neither an mmseg segmentor nor an '
        'mmdet detector; export_onnx.py exports a whole segmentor, or a '
        'detector\'s backbone and neck.')


def exported_part(model):
    """What of ``model`` goes into the file, as a module of one input."""
    if kind_of(type(model)) == 'segmentor':
        return SegmentorLogits(model)
    return FeaturePyramid(model)


def output_names(part, outputs):
    """The file's output names, for ``outputs`` (a sequence, one each)."""
    return ['logits'] if isinstance(part, SegmentorLogits) else [
        f'p{i}' for i in range(len(outputs))]


def _integral_upsample(self, x):
    """mmseg's ``Upsample`` by a whole factor, in integers: its own
    ``int(size * float_factor)`` would fix the size at export (its
    ``resize`` is ``F.interpolate`` with a warning)."""
    factor = int(self.scale_factor)
    return F.interpolate(x, [t * factor for t in x.shape[-2:]], None,
                         self.mode, self.align_corners)


def _pool_axis(x, bins, dim):
    """Adaptive average pooling of ``x`` along ``dim`` into ``bins``: bin
    i averages [floor(i n / bins), ceil((i + 1) n / bins)), from a float32
    cumulative sum, with the size ``n`` symbolic."""
    n = x.shape[dim]
    i = torch.arange(bins, device=x.device)
    start, end = i * n // bins, ((i + 1) * n + bins - 1) // bins
    total = x.float().cumsum(dim)
    total = torch.cat([torch.zeros_like(total.narrow(dim, 0, 1)), total],
                      dim)
    shape = [1] * x.dim()
    shape[dim] = bins
    sums = total.index_select(dim, end) - total.index_select(dim, start)
    return (sums / (end - start).view(shape)).to(x.dtype)


def _adaptive_avg_pool(self, x):
    """``nn.AdaptiveAvgPool2d`` in operations that hold for any input size:
    torch's exporter writes its bins for the traced size only (wrong
    values or an index out of range at another size)."""
    size = self.output_size
    size = (size, size) if isinstance(size, int) else size
    for dim, bins in zip((2, 3), size):
        if bins is not None:
            x = _pool_axis(x, bins, dim)
    return x


def _symbolic_forward(module):
    """The forward that replaces ``module``'s while exporting with symbolic
    sizes, or None."""
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return _adaptive_avg_pool
    if (type(module).__name__ == 'Upsample' and not module.size
            and isinstance(module.scale_factor, float)
            and module.scale_factor.is_integer()):
        return _integral_upsample
    return None


@contextlib.contextmanager
def _symbolic_sizes(model, dynamic):
    """Layers of the frameworks that torch's exporter would fix to the
    traced size, while exporting with ``dynamic`` sizes, replaced by the
    same arithmetic on symbolic sizes."""
    patched = []
    for module in model.modules() if dynamic else ():
        forward = _symbolic_forward(module)
        if forward is not None:
            module.forward = types.MethodType(forward, module)
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


def _module_names(part):
    return {id(m): (name, type(m).__name__)
            for name, m in part.named_modules()}


def _chain(error):
    """``error`` and the errors it was raised from, outermost first."""
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def _where_export_failed(error, part):
    """The innermost layer of ``part`` whose code was running when
    ``error`` was raised."""
    names, layer = _module_names(part), None
    for link in _chain(error):
        trace = link.__traceback__
        while trace is not None:
            owner = trace.tb_frame.f_locals.get('self')
            if id(owner) in names:
                layer = names[id(owner)]
            trace = trace.tb_next
    return layer


def _where_conversion_failed(error, program):
    """The layer that the graph node named in ``error`` came from."""
    text = '\n'.join(f'{type(e).__name__}: {e}' for e in _chain(error))
    found = re.search(r'translating node %(\w+) .*?target=([\w.]+)', text)
    if not found:
        return None, None
    name, target = found.groups()
    target = target.removeprefix('torch.ops.')
    nodes = [n for n in program.graph.nodes if str(n.target) == target]
    node = next((n for n in nodes if n.name == name), nodes[0] if nodes
                else None)
    stack = (node.meta.get('nn_module_stack') or {}) if node else {}
    if not stack:
        return None, target
    path, kind = list(stack.values())[-1]
    return (path, kind.rsplit('.', 1)[-1]), target


def _reason(error):
    """The innermost error's first line."""
    *_, error = _chain(error)
    first = str(error).strip().splitlines()
    return f'{type(error).__name__}: {first[0] if first else ""}'.strip()


def _named(layer, prefix):
    """'backbone.stages.0.1.hire (HireModule)' from the exported part's
    names (less its own attribute, ``prefix``)."""
    path, kind = layer
    path = path.removeprefix(prefix + '.') if prefix else path
    return f'{path} ({kind})' if path and path != prefix else kind


@contextlib.contextmanager
def _quiet():
    """Without the exporter's notes on torch internals and on torchvision
    ops that these models do not use."""
    logger = logging.getLogger('torch.onnx')
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def export(part, example, path, dynamic=False, opset=OPSET):
    """Write ``part`` (from ``exported_part``) to ``path`` as ONNX, traced
    on ``example``; ``dynamic``: batch, height and width symbolic."""
    prefix = next(iter(dict(part.named_children()))) if isinstance(
        part, (SegmentorLogits, FeaturePyramid)) else ''
    dims = None
    if dynamic:
        size = torch.export.Dim.DYNAMIC
        dims = ({0: size, 2: size, 3: size},)
    with torch.no_grad(), _symbolic_sizes(part, dynamic), _quiet():
        try:
            program = torch.export.export(part, (example,),
                                          dynamic_shapes=dims)
        except Exception as e:  # torch's exporter raises many kinds
            layer = _where_export_failed(e, part)
            where = _named(layer, prefix) if layer else type(part).__name__
            raise ExportError(
                f'cannot export {where}: {_reason(e)}; torch.export must '
                'trace that layer (no branching on tensor values).') from None
    try:
        with _quiet():
            onnx_program = torch.onnx.export(
                program, dynamo=True, opset_version=opset,
                input_names=['input'],
                output_names=output_names(
                    part, program.graph_signature.user_outputs),
                verbose=False)
    except Exception as e:  # noqa: BLE001  (as above)
        layer, target = _where_conversion_failed(e, program)
        where = _named(layer, prefix) if layer else type(part).__name__
        op = f' its {target}' if target else ''
        raise ExportError(
            f'cannot convert{op} in {where} to ONNX opset {opset}: '
            f'{_reason(e)}; that operation has no ONNX form here.') from None
    onnx_program.save(str(path))


def session(path, threads=None):
    """An ONNX Runtime session on ``path``, on the GPU where there is
    one; ``threads``: its CPU threads (default: ONNX Runtime's)."""
    onnxruntime = importlib.import_module('onnxruntime')  # an extra
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    providers = [p for p in ('CUDAExecutionProvider',
                             'CPUExecutionProvider')
                 if p in onnxruntime.get_available_providers()]
    return onnxruntime.InferenceSession(str(path), options,
                                        providers=providers)


def run(sess, batch):
    """``sess`` on a torch batch (cast to the file's input type), as
    float32 torch tensors."""
    spec = sess.get_inputs()[0]
    dtype = np.float16 if spec.type == 'tensor(float16)' else np.float32
    outputs = sess.run(None, {spec.name: batch.detach().cpu().numpy()
                              .astype(dtype)})
    return [torch.from_numpy(o.astype(np.float32)) for o in outputs]


def largest_difference(sess, part, batch):
    """The largest relative difference (over the largest magnitude of each
    output) of the file from ``part`` in float32, whether every output of
    the file is finite, and the file's outputs."""
    with torch.no_grad():
        expected = part(batch)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = run(sess, batch)
    finite = all(torch.isfinite(g).all() for g in got)
    return max(((g - e.float()).abs().max() / e.float().abs().max()).item()
               for g, e in zip(got, expected)), finite, got
