"""Evaluate a segmentor exported by export_onnx.py in ONNX Runtime.

    python tools/deployment/test_onnx.py CONFIG FILE [--out DIR]
        [--work-dir DIR] [--cfg-options K=V ...]

mmseg's own dataset, pipeline, data preprocessor, inference mode (whole or
sliding window), post-processing and evaluator run as in tools/test.py;
only the network is the ONNX file. It prints the same metrics (mIoU and
the rest). --out DIR: one PNG of class indices per image, as tools/test.py.
"""
import argparse
import os.path as osp

from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from mmhire.checks import check_data, check_writable, model_class
from mmhire.deployment import OnnxEncodeDecode, kind_of, require_onnx, \
    session
from mmhire.engine import add_common_args, build_runner, load_config, \
    tool_session
from mmhire.errors import ExportError, MMHireError


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='the config the file was exported '
                        'from')
    parser.add_argument('file', help='the .onnx file')
    parser.add_argument('--out', help='a folder for class-index PNGs')
    return add_common_args(parser).parse_args()


def open_file(path):
    """An ONNX Runtime session on a segmentor file of export_onnx.py."""
    if not osp.isfile(path):
        raise MMHireError(f'ONNX file {path!r} does not exist.')
    try:
        sess = session(path)
    except Exception as e:  # onnxruntime raises its own kinds
        first = str(e).strip().splitlines()[0] if str(e).strip() else ''
        raise MMHireError(f'{path!r} is not an ONNX file that ONNX Runtime '
                          f'can run ({first[:200]}).') from None
    inputs = [i.name for i in sess.get_inputs()]
    outputs = [o.name for o in sess.get_outputs()]
    if inputs != ['input'] or outputs != ['logits']:
        raise ExportError(
            f'{path!r} has inputs {inputs} and outputs {outputs}, not a '
            'segmentor\'s [\'input\'] -> [\'logits\'] of export_onnx.py.')
    return sess


def main():
    args = parse_args()
    with tool_session():
        require_onnx()
        cfg = load_config(args.config, args.cfg_options, args.work_dir,
                          args.launcher)
        if kind_of(model_class(cfg, cfg.model)) != 'segmentor':
            raise MMHireError('test_onnx.py evaluates segmentors; a '
                              "detector's file holds its backbone and neck "
                              'only, which its deploy tool completes.')
        sess = open_file(args.file)
        for option, path in (('--work-dir', cfg.work_dir),
                             ('--out', args.out)):
            check_writable(path, option)
        if args.out:
            cfg.test_evaluator.update(output_dir=osp.abspath(args.out),
                                      keep_results=True)
        check_data(cfg, ['test_dataloader'])
        runner = build_runner(cfg)
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        model.encode_decode = OnnxEncodeDecode(
            sess, model.decode_head.num_classes)
        print_log(f'mmhire: testing {args.file} in ONNX Runtime '
                  f'({", ".join(sess.get_providers())})', logger='current')
        runner.test()


if __name__ == '__main__':
    main()
