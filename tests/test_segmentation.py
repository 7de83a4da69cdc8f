"""Segmentation: every config builds and trains, the supplement's settings are
in the configs, multi-scale testing works, and the tools run end to end on
generated data."""
import json
import math
import re

import mmcv
import pytest
import torch
from conftest import (ROOT, check_on_meta, config_groups, refused,
                      run_tool, smallest_of_group)
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

from mmhire.engine import adapt_to_machine, load_config, use_tta
from mmhire.errors import ArchError

CONFIGS = sorted((ROOT / 'configs/segmentation').glob('*.py'))
HIRE_CONFIGS = [p for p in CONFIGS if '_hire_' in p.stem]
CONVMLP_CONFIGS = [p for p in CONFIGS if '_convmlp_' in p.stem]
REPMLP_CONFIGS = [p for p in CONFIGS if '_repmlp_' in p.stem]
WAVEMLP_CONFIGS = [p for p in CONFIGS if '_wavemlp_' in p.stem]
WAVEMLP_ARCHS = dict(tiny='T', small='S', medium='M')
DEMO = ROOT / 'configs/segmentation/demo/fpn_hire_tiny_synthetic.py'
CHANNELS = dict(tiny=[64, 128, 320, 512], small=[64, 128, 320, 512],
                base=[64, 128, 320, 512], large=[96, 192, 384, 768])
CONVMLP_CHANNELS = dict(small=[64, 128, 256, 512], medium=[64, 128, 256, 512],
                        large=[96, 192, 384, 768])
# Whole-model parameters (M) that the ConvMLP authors report, to 0.1 M.
CONVMLP_PARAMS = dict(fpn_convmlp_small_40k_ade20k=12.8,
                      fpn_convmlp_medium_40k_ade20k=21.1,
                      fpn_convmlp_large_40k_ade20k=46.3)
REPMLP_CHANNELS = dict(t256=[64, 128, 256, 512], b256=[96, 192, 384, 768],
                       d256=[80, 160, 320, 640], l256=[96, 192, 384, 768])


def test_every_framework_and_size_has_its_config():
    assert {p.stem for p in CONFIGS} == {
        name for size in CHANNELS for name in (
            f'fpn_hire_{size}_40k_ade20k', f'upernet_hire_{size}_160k_ade20k')
    } | {f'fpn_convmlp_{size}_40k_ade20k' for size in CONVMLP_CHANNELS} | {
        name for size in REPMLP_CHANNELS for name in (
            f'upernet_repmlp_{size}_80k_cityscapes',
            f'upernet_repmlp_{size}_160k_ade20k')
    } | {'upernet_repmlp_d256_conv5_80k_cityscapes'} | {
        f'fpn_wavemlp_{size}_40k_ade20k' for size in WAVEMLP_ARCHS}


def seg_batch(size=64, classes=150):
    size = (size, size) if isinstance(size, int) else size
    from mmseg.structures import SegDataSample
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(
            img_shape=size, ori_shape=size, pad_shape=size))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, classes, (1, *size)))
        samples.append(sample)
    return dict(inputs=[torch.randint(0, 256, (3, *size)).float()
                        for _ in samples], data_samples=samples)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_config_builds_on_meta_as_the_tools_check_it(path):
    check_on_meta(path, CONVMLP_PARAMS)


@pytest.mark.parametrize('group', config_groups(CONFIGS))
def test_each_framework_and_backbone_trains_one_iteration_and_infers(group):
    """The smallest size of each; the others differ from it only in the
    backbone's arch (checked here), which each backbone's tests cover."""
    path = smallest_of_group(config_groups(CONFIGS)[group])
    cfg = Config.fromfile(path)
    adapt_to_machine(cfg, 'none')  # SyncBN -> BN in one process
    cfg.model.backbone.init_cfg = None  # no released file on disk here
    # Small inputs on CPU; Cityscapes-shaped (1:2) for its configs.
    size = (64, 128) if 'cityscapes' in path.stem else (64, 64)
    cfg.model.data_preprocessor.size = size
    classes = cfg.model.decode_head.num_classes
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    model = MODELS.build(cfg.model)
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    model.train()
    losses = model.train_step(seg_batch(size, classes), optim_wrapper)
    assert 'decode.loss_ce' in losses
    assert all(torch.isfinite(v) for v in losses.values())
    if 'upernet' in path.stem:
        assert 'aux.loss_ce' in losses
    model.eval()
    with torch.no_grad():
        results = model.test_step(seg_batch(size, classes))
    assert results[0].pred_sem_seg.data.shape == (1, *size)


@pytest.mark.parametrize('path', HIRE_CONFIGS, ids=lambda p: p.stem)
def test_config_holds_the_supplement_settings(path):
    cfg = Config.fromfile(path)
    framework, size = re.match(r'(fpn|upernet)_hire_(\w+?)_\d+k', path.stem
                               ).groups()
    assert cfg.custom_imports.imports == ['mmhire']
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch) == ('HireMLP', size)
    assert backbone.norm_cfg.type == 'SyncBN'
    assert backbone.init_cfg.checkpoint == cfg.pretrained == \
        f'checkpoints/hire_mlp_{size}.pth'
    assert cfg.model.pretrained is None
    assert cfg.model.decode_head.num_classes == 150
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.data_root == 'data/ade/ADEChallengeData2016'
    pipeline = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    assert pipeline['RandomResize'].ratio_range == (0.5, 2.0)
    assert pipeline['RandomCrop'].crop_size == (512, 512)
    assert 'RandomFlip' in pipeline and 'PhotoMetricDistortion' in pipeline
    optimizer = cfg.optim_wrapper.optimizer
    decay = cfg.param_scheduler[-1]
    if framework == 'fpn':  # C.2, Semantic FPN
        assert cfg.model.neck.in_channels == CHANNELS[size]
        assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == \
            ('AdamW', 1e-4, 0.05)
        assert (decay.type, decay.power, decay.end) == ('PolyLR', 0.9, 40000)
        assert cfg.train_cfg.max_iters == 40000
    else:  # C.2, UperNet: linear decay, auxiliary head on the third stage
        assert cfg.model.decode_head.in_channels == CHANNELS[size]
        assert cfg.model.auxiliary_head.in_channels == CHANNELS[size][2]
        assert cfg.model.auxiliary_head.in_index == 2
        assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == \
            ('AdamW', 6e-5, 0.01)
        assert (decay.type, decay.power, decay.end) == \
            ('PolyLR', 1.0, 160000)
        assert cfg.train_cfg.max_iters == 160000
    # Multi-scale testing: 0.5..1.5 x the training scale (2048, 512).
    scales = use_tta(cfg)
    assert scales == [(1024, 256), (1536, 384), (2048, 512), (2560, 640),
                      (3072, 768)]
    assert cfg.model.type == 'SegTTAModel'


@pytest.mark.parametrize('path', CONVMLP_CONFIGS + WAVEMLP_CONFIGS,
                         ids=lambda p: p.stem)
def test_convmlp_and_wavemlp_configs_hold_their_settings(path):
    cfg = Config.fromfile(path)
    family, size = re.fullmatch(r'fpn_(convmlp|wavemlp)_(\w+)_40k_ade20k',
                                path.stem).groups()
    backbone = cfg.model.backbone
    if family == 'convmlp':  # the authors' config
        assert (backbone.type, backbone.arch) == ('ConvMLP', size)
        assert backbone.norm_cfg.type == 'BN'
        assert backbone.drop_path_rate == 0.1
        assert cfg.pretrained == f'checkpoints/convmlp_{size[0]}_imagenet.pth'
        assert cfg.model.neck.in_channels == CONVMLP_CHANNELS[size]
    else:  # presumed: the PoolFormer config the authors' dense code uses
        arch = WAVEMLP_ARCHS[size]
        assert (backbone.type, backbone.arch) == ('WaveMLP', arch)
        assert backbone.norm_cfg.type == 'SyncBN'
        assert backbone.drop_path_rate == 0
        assert cfg.pretrained == f'checkpoints/WaveMLP_{arch}.pth.tar'
        assert cfg.model.neck.in_channels == [64, 128, 320, 512]
    assert backbone.init_cfg.checkpoint == cfg.pretrained
    assert cfg.model.pretrained is None
    head = cfg.model.decode_head
    assert (head.type, head.num_classes, head.channels) == ('FPNHead', 150, 128)
    # AdamW lr 2e-4, weight decay 1e-4, poly 0.9 over 40k iterations, 4
    # images x 8 GPUs, 512x512 crops, test at (2048, 512).
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == \
        ('AdamW', 2e-4, 1e-4)
    (decay, ) = cfg.param_scheduler
    assert (decay.type, decay.power, decay.eta_min, decay.end) == \
        ('PolyLR', 0.9, 0.0, 40000)
    assert cfg.train_cfg.max_iters == 40000
    assert cfg.train_cfg.val_interval == 4000
    assert cfg.train_dataloader.batch_size == 4
    train = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    assert train['RandomCrop'].crop_size == (512, 512)
    assert train['RandomCrop'].cat_max_ratio == 0.75
    test = {t.type: t for t in cfg.test_dataloader.dataset.pipeline}
    assert test['Resize'].scale == (2048, 512)
    assert len(use_tta(cfg)) == 5  # --tta as for Hire-MLP


@pytest.mark.parametrize('path', REPMLP_CONFIGS, ids=lambda p: p.stem)
def test_repmlp_config_holds_the_paper_and_presumed_settings(path):
    cfg = Config.fromfile(path)
    size, conv5, dataset = re.fullmatch(
        r'upernet_repmlp_(\w\d+)(_conv5)?_\d+k_(\w+)', path.stem).groups()
    assert cfg.custom_imports.imports == ['mmhire']
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch) == ('RepMLPNet', size.upper())
    assert backbone.embed_kernel == (5 if conv5 else 3)
    assert backbone.out_indices == (0, 1, 2, 3)
    assert backbone.norm_cfg.type == 'SyncBN'
    assert backbone.init_cfg.checkpoint == cfg.pretrained == \
        f'checkpoints/repmlpnet_{size}_train.pth'
    assert cfg.model.pretrained is None
    assert cfg.model.decode_head.type == 'UPerHead'
    assert cfg.model.decode_head.in_channels == REPMLP_CHANNELS[size]
    assert cfg.model.auxiliary_head.in_channels == REPMLP_CHANNELS[size][2]
    assert cfg.model.auxiliary_head.in_index == 2
    optimizer = cfg.optim_wrapper.optimizer
    decay = cfg.param_scheduler[-1]
    train = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    test = {t.type: t for t in cfg.test_dataloader.dataset.pipeline}
    if dataset == 'cityscapes':
        # Paper: 80k iterations, 512x1024 training, whole 1024x2048 test.
        # mmseg's stock UperNet Cityscapes 80k for the rest (presumed).
        assert cfg.model.decode_head.num_classes == 19
        assert cfg.train_cfg.max_iters == 80000
        assert cfg.model.data_preprocessor.size == (512, 1024)
        assert train['RandomCrop'].crop_size == (512, 1024)
        assert test['Resize'].scale == (2048, 1024)
        assert cfg.model.test_cfg.mode == 'whole'
        assert (optimizer.type, optimizer.lr, optimizer.momentum,
                optimizer.weight_decay) == ('SGD', 0.01, 0.9, 5e-4)
        assert (decay.type, decay.power, decay.eta_min, decay.end) == \
            ('PolyLR', 0.9, 1e-4, 80000)
        assert cfg.train_dataloader.batch_size == 2
        assert cfg.data_root == 'data/cityscapes/'
        assert cfg.train_dataloader.dataset.type == 'CityscapesDataset'
        assert len(use_tta(cfg)) == 6  # mmseg's Cityscapes --tta: 0.5..1.75
    else:  # the Hire-MLP UperNet recipe, exactly
        hire = Config.fromfile(ROOT / 'configs/segmentation/'
                               'upernet_hire_small_160k_ade20k.py')
        for key in ('optim_wrapper', 'param_scheduler', 'train_cfg',
                    'train_dataloader', 'test_dataloader', 'tta_pipeline'):
            assert cfg[key] == hire[key], key
        assert cfg.model.decode_head.num_classes == 150


def test_two_process_dist_train_on_cpu(small_ade):
    result = run_tool(
        ['tools/dist_train.sh', str(DEMO), '2', '--cfg-options',
         'model.decode_head.norm_cfg.type=SyncBN', 'train_cfg.max_iters=3',
         'train_cfg.val_interval=3', 'train_dataloader.batch_size=2',
         'default_hooks.logger.interval=1'],
        cwd=small_ade, env=dict(PORT='29612'))
    output = result.stdout + result.stderr
    assert 'Distributed training: True' in output and 'GPU number: 2' in output
    assert 'Iter(train) [3/3]' in output
    assert output.count('SyncBN is replaced by BN') == 1
    assert re.search(r'mIoU: [\d.]+', output)


def test_amp_optim_wrapper_trains_the_demo_in_bfloat16(small_ade, tmp_path,
                                                       monkeypatch):
    # mmengine's AmpOptimWrapper refuses to start without a GPU; past that
    # check (in this test only) it runs under CPU autocast in bfloat16.
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    from mmengine.runner import Runner
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available',
                        lambda: True)
    monkeypatch.chdir(small_ade)
    cfg = Config.fromfile(DEMO)
    adapt_to_machine(cfg, 'none')
    cfg.work_dir = str(tmp_path)
    cfg.optim_wrapper.update(type='AmpOptimWrapper', dtype='bfloat16')
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=6)
    cfg.train_dataloader.batch_size = 2  # bfloat16 is slow on most CPUs
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 100
    cfg.randomness = dict(seed=0)
    runner = Runner.from_cfg(cfg)
    dtypes = []
    runner.model.backbone.register_forward_hook(
        lambda module, args, outs: dtypes.extend(o.dtype for o in outs))
    runner.train()
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert set(dtypes) == {torch.bfloat16}
    assert len(losses) == 6 and all(map(math.isfinite, losses))
    assert sum(losses[-2:]) < sum(losses[:2])


def test_single_and_multi_scale_testing(trained_demo):
    small_ade, checkpoint, trained = trained_demo
    test = ['tools/test.py', str(DEMO), checkpoint]
    multi = run_tool([*test, '--tta'], cwd=small_ade)
    assert ('multi-scale test at 5 scales [(256, 64), (384, 96), (512, 128), '
            '(640, 160), (768, 192)] with horizontal flip') in multi.stdout
    assert re.search(r'mIoU: [\d.]+', multi.stdout)
    no_flip = run_tool([*test, '--tta', '--no-flip'], cwd=small_ade)
    assert 'at 5 scales' in no_flip.stdout and 'without horizontal flip' \
        in no_flip.stdout
    # The deploy form scores as the trained network did in its validation.
    deployed = run_tool([*test, '--deploy'], cwd=small_ade)
    assert '1 backbone(s) switched to the deploy form' in deployed.stdout
    assert 'multi-scale' not in deployed.stdout
    scores = re.findall(r'mIoU: ([\d.]+)', trained.stdout)
    assert scores and re.findall(r'mIoU: ([\d.]+)', deployed.stdout) == scores


@pytest.mark.parametrize('name', ['fpn_convmlp_small_synthetic',
                                  'fpn_wavemlp_tiny_synthetic'])
def test_deploy_form_tests_as_the_trained_network(small_ade, name):
    demo = str(ROOT / f'configs/segmentation/demo/{name}.py')
    trained = run_tool(['tools/train.py', demo, '--work-dir',
                        f'work_dirs/{name}', '--cfg-options',
                        'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
                        'default_hooks.checkpoint.interval=2'], cwd=small_ade)
    deployed = run_tool(['tools/test.py', demo,
                         f'work_dirs/{name}/iter_2.pth', '--deploy'],
                        cwd=small_ade)
    assert '1 backbone(s) switched to the deploy form' in deployed.stdout
    scores = re.findall(r'mIoU: ([\d.]+)', trained.stdout)
    assert scores and re.findall(r'mIoU: ([\d.]+)', deployed.stdout) == scores


@pytest.mark.parametrize('config,says', [
    ('fpn_hire_small_40k_ade20k', ('data/ade/ADEChallengeData2016 does not '
                                   'exist', 'tools/demo.py segmentation')),
    ('upernet_repmlp_d256_80k_cityscapes', (
        'data/cityscapes/ does not exist',
        'dataset_converters/cityscapes.py'))])
def test_missing_dataset_is_a_clear_error(tmp_path, config, says):
    result, _ = refused(
        ['tools/train.py', str(ROOT / f'configs/segmentation/{config}.py')],
        tmp_path)
    assert all(s in result.stderr for s in says), result.stderr[-1000:]


def test_cityscapes_config_trains_and_evaluates_on_generated_data(tmp_path):
    from mmhire.datasets.synthetic import make_cityscapes_shapes
    make_cityscapes_shapes(tmp_path / 'data/synthetic_cityscapes',
                           num_train=8, num_val=4)
    demo = str(ROOT / 'configs/segmentation/demo/'
               'upernet_repmlp_t256_synthetic_cityscapes.py')
    trained = run_tool(['tools/train.py', demo, '--work-dir', 'work_dirs/cs',
                        '--cfg-options', 'train_cfg.max_iters=4',
                        'train_cfg.val_interval=4',
                        'default_hooks.checkpoint.interval=4',
                        'default_hooks.logger.interval=1'], cwd=tmp_path)
    assert 'Iter(train) [4/4]' in trained.stdout
    scores = re.findall(r'mIoU: ([\d.]+)', trained.stdout)
    assert scores  # and a Cityscapes class that the data holds was scored:
    assert re.search(r'\|\s+vegetation\s+\|\s+[\d.]+', trained.stdout)
    test = ['tools/test.py', demo, 'work_dirs/cs/iter_4.pth']
    deployed = run_tool([*test, '--deploy'], cwd=tmp_path)
    assert '1 backbone(s) switched to the deploy form' in deployed.stdout
    assert re.findall(r'mIoU: ([\d.]+)', deployed.stdout) == scores
    multi = run_tool([*test, '--tta'], cwd=tmp_path)
    assert 'multi-scale test at 3 scales' in multi.stdout
    assert re.search(r'mIoU: [\d.]+', multi.stdout)


# The demo's code path in a few minutes: 30 iterations, validated and tested
# at five scales on 16 images (the full demo, 300 iterations, runs with
# -m heavy).
SHORT_DEMO = ['--cfg-options', 'train_cfg.max_iters=30',
              'train_cfg.val_interval=30', 'default_hooks.checkpoint.interval=30',
              'param_scheduler.0.end=30', 'val_dataloader.dataset.indices=16',
              'test_dataloader.dataset.indices=16']
# mIoU. Chance over 5 classes is ~20% at best. The short run reached 42.6-46.7
# single-scale and 37.4-47.2 multi-scale with seeds 0-2; the README gives
# what the full demo reaches.
SHORT, FULL = 30, 60


@pytest.mark.slow
@pytest.mark.parametrize('backbone,name,options,floor', [
    ('hire_mlp', 'fpn_hire_tiny_synthetic', SHORT_DEMO, SHORT),
    pytest.param('hire_mlp', 'fpn_hire_tiny_synthetic', [], FULL,
                 marks=pytest.mark.heavy, id='hire_mlp-full'),
    pytest.param('conv_mlp', 'fpn_convmlp_small_synthetic', [], FULL,
                 marks=pytest.mark.heavy, id='conv_mlp-full'),
    pytest.param('repmlp_net', 'upernet_repmlp_t256_synthetic_cityscapes', [],
                 FULL, marks=pytest.mark.heavy, id='repmlp_net-full'),
    pytest.param('wave_mlp', 'fpn_wavemlp_tiny_synthetic', [], FULL,
                 marks=pytest.mark.heavy, id='wave_mlp-full')])
def test_demo_learns_the_generated_regions(tmp_path, backbone, name, options,
                                           floor):
    result = run_tool(['tools/demo.py', 'segmentation', '--backbone',
                       backbone, *options], cwd=tmp_path, timeout=2400)
    work_dir = tmp_path / 'work_dirs' / name
    metrics = json.loads((work_dir / 'metrics.json').read_text())
    print(metrics)
    assert metrics['mIoU'] >= floor, metrics
    assert metrics['mIoU (multi-scale)'] >= floor, metrics
    assert (work_dir / 'segmentation_prediction.png').stat().st_size > 1000
    grid = mmcv.imread(work_dir / 'segmentation_predictions_grid.png')
    assert grid.shape[0] > 4 * 3 * 128 and grid.shape[1] > 2 * 3 * 3 * 128
    assert 'picture of the predictions' in result.stdout


@pytest.mark.parametrize('options,says', [
    ({'model.backbone.out_indices': (0, 1, 2)},
     'model.decode_head.in_index is [0, 1, 2, 3], but RepMLPNet with '
     'out_indices (0, 1, 2) returns 3 maps of [64, 128, 256] channels; set '
     'in_index or out_indices to match.'),
    ({'model.auxiliary_head.in_channels': 512},
     'model.auxiliary_head.in_channels is [512], but RepMLPNet with '
     'out_indices (0, 1, 2, 3) returns 4 maps of [64, 128, 256, 512] '
     'channels and in_index [2] picks [256]; set in_channels to match.'),
], ids=['in_index', 'in_channels'])
def test_decode_heads_are_checked_against_the_backbone(options, says):
    with pytest.raises(ArchError, match=re.escape(says)):
        load_config(str(ROOT / 'configs/segmentation/demo/'
                        'upernet_repmlp_t256_synthetic_cityscapes.py'),
                    options)
