"""What the tools share: reading a config the way mmdet's and mmseg's tools
do, adapting it to the machine, building the runner, test-time
augmentation, and turning mmhire's errors into one clear line. The checks
made before anything heavy starts are in ``mmhire.checks``."""
import atexit
import copy
import functools
import gc
import logging
import os
import os.path as osp
import re
import sys
import time
import warnings
from contextlib import contextmanager

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.config import utils as config_utils
from mmengine.fileio import load
from mmengine.device import (is_mlu_available, is_musa_available,
                             is_npu_available)
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmhire  # noqa: F401  (registers the backbones and the checkpoint allowlist)
from mmhire.checks import check_channels, check_option_keys, leaf_datasets
from mmhire.errors import MMHireError
from mmhire.preemption import PREEMPTED_EXIT, Preempted

# mmengine resolves 'mmdet::' configs with pkg_resources, which warns on
# every run; the pinned setuptools still has it.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')



@functools.cache
def _model_index(package_path):
    """Config name -> model entry of a package's metafiles, as mmengine's
    ``_get_cfg_metainfo`` collects them."""
    mim = osp.join(package_path, '.mim')
    index = {}
    for metafile in load(osp.join(mim, 'model-index.yml'))['Import']:
        for model in load(osp.join(mim, metafile))['Models']:
            if 'Config' in model:
                index.setdefault(model['Config'].partition('/')[-1], model)
    return index


def _cfg_metainfo(package_path, cfg_path):
    index = _model_index(package_path)
    if cfg_path not in index:
        raise ValueError(f'{cfg_path} is not a model config of '
                         f'{package_path}')  # mmengine: a base config
    return index[cfg_path]


# For each 'mmdet::' or 'mmseg::' base of a config, mmengine parses the
# library's hundreds of metafiles again (about a second each time, 2-3 s
# of every tool's start); read them once per process.
config_utils._get_cfg_metainfo = _cfg_metainfo


def add_common_args(parser):
    """The options train.py and test.py share with mmdet's and mmseg's."""
    parser.add_argument('--work-dir', help='where logs, checkpoints and '
                        'results go; defaults to work_dirs/<config name>')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'])
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def load_config(path, cfg_options=None, work_dir=None, launcher='none'):
    """The config as mmdet's and mmseg's tools prepare it, adapted to this
    machine."""
    if not osp.isfile(path):
        raise MMHireError(f'config {path!r} does not exist.')
    cfg = Config.fromfile(path)
    if cfg_options:
        check_option_keys(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(path))[0])
    adapt_to_machine(cfg, launcher)
    check_channels(cfg)
    return cfg


def _replace_type(node, old, new):
    """Replace ``type=old`` by ``type=new`` everywhere in a config tree."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') == old:
            node['type'] = new
            count += 1
        for value in node.values():
            count += _replace_type(value, old, new)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _replace_type(value, old, new)
    return count


def adapt_to_machine(cfg, launcher):
    """SyncBN only where it can run and matters (CUDA, several processes);
    DDP over gloo on CPU."""
    cuda = torch.cuda.is_available()
    if not cuda or launcher == 'none':
        replaced = _replace_type(cfg.model, 'SyncBN', 'BN')
        if replaced and os.environ.get('RANK', '0') == '0':
            why = 'no CUDA' if not cuda else 'a single process'
            print_log(f'mmhire: {why}, so SyncBN is replaced by BN in '
                      f'{replaced} places of the model.', logger='current',
                      level=logging.WARNING)
    if launcher == 'pytorch' and not cuda:
        cfg.env_cfg.dist_cfg = dict(backend='gloo')
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel',
                                     device_ids=None, broadcast_buffers=False)
        # mmengine's init_dist selects a CUDA device first; start gloo here.
        if not dist.is_initialized():
            dist.init_process_group(backend='gloo')


def use_amp(cfg):
    """``--amp``: mmengine's ``AmpOptimWrapper`` (float16 autocast, dynamic
    loss scaling), which runs on CUDA (or NPU, MLU, MUSA) only; without one
    of those, one line instead of mmengine's assertion."""
    if not (torch.cuda.is_available() or is_npu_available()
            or is_mlu_available() or is_musa_available()):
        raise MMHireError(
            '--amp needs a GPU (mmengine\'s AmpOptimWrapper runs on CUDA, '
            'NPU, MLU or MUSA) and this machine has none; train without '
            '--amp here.')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'


def build_runner(cfg):
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg \
        else RUNNERS.build(cfg)


def _close_process_groups():
    """Take the process groups down while the interpreter is still whole.

    A gloo worker thread releases the tensors of a collective just after
    the collective completes; where it holds the last reference to a
    tensor's Python object it must take the GIL. If the process is by then
    finalizing (it exited right after its last collective), taking the GIL
    ends the thread with pthread_exit, whose unwinding through noexcept C++
    destructors calls std::terminate: "terminate called without an active
    exception", SIGABRT, an exit -6 after a finished run. So: a pause that
    frees the GIL for such a thread, then the groups destroyed, and the
    objects that still hold one (the DDP wrapper, in the runner's reference
    cycles) collected, so that the group's destructor joins its idle
    threads now rather than during finalization."""
    if dist.is_available() and dist.is_initialized():
        time.sleep(0.1)
        dist.destroy_process_group()
        gc.collect()


atexit.register(_close_process_groups)


@contextmanager
def tool_session():
    """The body of a tool: mmhire's errors end it as one line on stderr
    (exit 1), a preempted run with its line and exit status 75. A finished
    run waits at a barrier, so that no process leaves (and takes its side
    of the process group down) while another still runs collectives with
    it; the groups are closed at exit (``_close_process_groups``)."""
    try:
        yield
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
    except Preempted as e:
        print(e, file=sys.stderr)
        if os.environ.get('MMHIRE_PREEMPTED_FLAG'):  # for tools/torchrun.sh
            open(os.environ['MMHIRE_PREEMPTED_FLAG'], 'a').close()
        sys.exit(PREEMPTED_EXIT)
    except MMHireError as e:
        # mmengine prefixes 'class `X` in module: ' for each registry level.
        message = re.sub(r'class `\w+` in [\w./-]+: ', '', str(e))
        sys.exit(f'error: {message}')


def _default_detection_tta(cfg):
    """mmdet's test.py default where a detection config has none: the test
    pipeline with the original and the flipped image, boxes merged by NMS
    (DetTTAModel merges no masks: bbox-only detectors)."""
    cfg.setdefault('tta_model', dict(
        type='DetTTAModel',
        tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5),
                     max_per_img=100)))
    test_set = leaf_datasets(cfg.test_dataloader.dataset)[0]
    pipeline = copy.deepcopy(test_set.pipeline)
    pipeline[-1] = dict(type='TestTimeAug', transforms=[
        [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
        [dict(type='PackDetInputs',
              meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                         'scale_factor', 'flip', 'flip_direction'))]])
    cfg.tta_pipeline = pipeline


def use_tta(cfg, flip=True):
    """Test with the config's ``tta_pipeline`` and ``tta_model`` (as mmseg's
    ``test.py --tta``; for a detection config without them, mmdet's default
    flip augmentation), optionally without the flipped pass. Returns the
    scales for the log."""
    if cfg.get('default_scope') == 'mmdet' and not cfg.get('tta_pipeline'):
        _default_detection_tta(cfg)
    if not cfg.get('tta_pipeline') or not cfg.get('tta_model'):
        raise MMHireError('--tta needs tta_pipeline and tta_model in the '
                          'config (the segmentation configs have them).')
    pipeline = copy.deepcopy(cfg.tta_pipeline)
    scales = []
    for transform in pipeline:
        if transform['type'] != 'TestTimeAug':
            continue
        if not flip:
            transform['transforms'] = [
                [t for t in group
                 if t['type'] != 'RandomFlip' or t.get('prob', 0) == 0]
                for group in transform['transforms']]
        scales = [t.get('scale') or t.get('scale_factor')
                  for group in transform['transforms'] for t in group
                  if t['type'] == 'Resize']
    cfg.test_dataloader.dataset.pipeline = pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model
    flipped = "with" if flip else "without"
    print_log(f'mmhire: multi-scale test at {len(scales)} scales '
              f'{[tuple(s) if isinstance(s, (list, tuple)) else s for s in scales]}'
              f' {flipped} horizontal flip' if scales else
              f'mmhire: test-time augmentation at the test scale {flipped} '
              'horizontal flip', logger='current')
    return scales
