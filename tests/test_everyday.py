"""Everyday use: inference on a folder of your own images, and test.py's
--out / --show-dir, for a detector and a segmentor, with --tta too."""
import json
import os
import pickle
import re
import shutil
import stat

import pytest
from conftest import ROOT, run_tool

DET = str(ROOT / 'configs/detection/demo/mask_rcnn_convmlp_small_synthetic.py')
SEG = str(ROOT / 'configs/segmentation/demo/fpn_hire_tiny_synthetic.py')


@pytest.fixture(scope='module')
def det_checkpoint(small_coco):
    run_tool(['tools/train.py', DET, '--work-dir', 'work_dirs/everyday',
              '--cfg-options', 'train_cfg.max_epochs=1',
              'train_dataloader.dataset.indices=4', 'train_cfg.val_begin=9'],
             cwd=small_coco)
    return small_coco / 'work_dirs/everyday/epoch_1.pth'


@pytest.fixture(scope='module')
def seg_checkpoint(small_ade):
    run_tool(['tools/train.py', SEG, '--work-dir', 'work_dirs/everyday',
              '--cfg-options', 'train_cfg.max_iters=2',
              'train_cfg.val_interval=9', 'default_hooks.checkpoint.interval=2'],
             cwd=small_ade)
    return small_ade / 'work_dirs/everyday/iter_2.pth'


def own_images(source, folder, count=3):
    """A folder of 'your own' images (copies of generated ones, renamed)
    and one that is not an image at all."""
    folder.mkdir()
    for i, image in enumerate(sorted(source.iterdir())[:count]):
        shutil.copy(image, folder / f'photo_{i}{image.suffix}')
    (folder / 'broken.jpg').write_bytes(b'not an image')
    return folder


@pytest.mark.parametrize('task', ['detection', 'segmentation'])
def test_infer_on_a_folder_of_images(task, det_checkpoint, seg_checkpoint,
                                     tmp_path):
    if task == 'detection':
        config, checkpoint = DET, det_checkpoint
        source = det_checkpoint.parents[2] / 'data/synthetic_coco/val'
    else:
        config, checkpoint = SEG, seg_checkpoint
        source = seg_checkpoint.parents[2] / 'data/synthetic_ade/images/validation'
    images = own_images(source, tmp_path / 'photos')
    result = run_tool(['tools/infer.py', str(images), config,
                       str(checkpoint), '--out-dir', 'out', '--score-thr',
                       '0', '--deploy'], cwd=tmp_path)
    assert 'skipped' in result.stdout and \
        f'skipped {images / "broken.jpg"}: not a readable image' \
        in result.stdout
    assert '3 images: pictures in out/vis, predictions in out/preds; 1 ' \
        'skipped' in result.stdout
    assert 'Traceback' not in result.stderr
    pictures = sorted(p.stem for p in (tmp_path / 'out/vis').iterdir())
    assert pictures == ['photo_0', 'photo_1', 'photo_2']
    for i in range(3):
        record = json.loads(
            (tmp_path / f'out/preds/photo_{i}.json').read_text())
        if task == 'detection':
            assert len(record['labels']) == len(record['scores']) == \
                len(record['bboxes']) == len(record['classes']) > 0
            assert set(record['classes']) <= {'circle', 'square', 'triangle'}
            assert all(len(box) == 4 for box in record['bboxes'])
        else:
            assert (record['height'], record['width']) == (128, 128)
            assert sum(record['pixels'].values()) == 128 * 128
            assert (tmp_path / f'out/preds/photo_{i}.png').is_file()


@pytest.mark.parametrize('tta', [False, True], ids=['single', 'tta'])
def test_test_py_writes_results_and_drawings_for_detection(
        det_checkpoint, tta):
    cwd = det_checkpoint.parents[2]
    name = 'tta' if tta else 'single'
    extra = ['--tta', '--cfg-options', 'model.roi_head.mask_head=None',
             'test_evaluator.metric=bbox'] if tta else []  # bbox-only TTA
    result = run_tool(['tools/test.py', DET, str(det_checkpoint), '--out',
                       f'{name}.pkl', '--show-dir', f'{name}_drawn', *extra],
                      cwd=cwd)
    assert re.search(r'coco/bbox_mAP: [\d.]+', result.stdout)
    with open(cwd / f'{name}.pkl', 'rb') as f:
        results = pickle.load(f)  # mmdet's own format, as DumpDetResults
    assert len(results) == 8 and 'pred_instances' in results[0]
    assert ('masks' in results[0]['pred_instances']) != tta
    drawn = list((cwd / f'{name}_drawn').glob('*.png'))
    assert len(drawn) == 8


@pytest.mark.parametrize('tta', [False, True], ids=['single', 'tta'])
def test_test_py_writes_results_and_drawings_for_segmentation(
        seg_checkpoint, tta):
    cwd = seg_checkpoint.parents[2]
    name = 'tta' if tta else 'single'
    result = run_tool(['tools/test.py', SEG, str(seg_checkpoint), '--out',
                       f'{name}_labels', '--show-dir', f'{name}_drawn',
                       *(['--tta'] if tta else [])], cwd=cwd)
    assert re.search(r'mIoU: [\d.]+', result.stdout)
    assert len(list((cwd / f'{name}_labels').glob('*.png'))) == 4
    assert len(list((cwd / f'{name}_drawn').rglob('*.png'))) == 4


def test_show_without_a_display_is_a_clear_error(det_checkpoint):
    result = run_tool(['tools/test.py', DET, str(det_checkpoint), '--show'],
                      cwd=det_checkpoint.parents[2], check=False,
                      env={'DISPLAY': ''})
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert '--show needs a display' in result.stderr


def test_checkpoints_follow_the_umask(seg_checkpoint):
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(seg_checkpoint.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize('args,says', [
    (['--device', 'gpu'], "--device 'gpu': use cpu, cuda or cuda:N."),
    (['--device', 'cuda:7'], '--device cuda:7: this machine has '),
    ([], 'none of the 1 inputs is a readable image; nothing was predicted.'),
], ids=['unknown-device', 'absent-device', 'nothing-readable'])
def test_infer_refuses_in_one_line(seg_checkpoint, tmp_path, args, says):
    (tmp_path / 'broken.jpg').write_bytes(b'not an image')
    result = run_tool(['tools/infer.py', str(tmp_path / 'broken.jpg'), SEG,
                       str(seg_checkpoint), '--out-dir', 'out', *args],
                      cwd=tmp_path, check=False)
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert says in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize('script,args', [
    ('dist_train.sh', [SEG, '0']), ('dist_train.sh', [SEG, 'two']),
    ('dist_train.sh', ['2', SEG]), ('dist_train.sh', [SEG]),
    ('dist_test.sh', [SEG, 'ckpt.pth', '-1'])])
def test_dist_scripts_check_the_process_count(tmp_path, script, args):
    result = run_tool([f'tools/{script}', *args], cwd=tmp_path, check=False)
    assert result.returncode == 2 and result.stderr.startswith(
        'error: GPUS must be a whole number above 0')


def test_get_flops_checks_the_shape(tmp_path):
    result = run_tool(['tools/analysis/get_flops.py', 'tiny', '--shape', '0',
                       '-5'], cwd=tmp_path, check=False)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(
        "argument --shape: '0' is not a whole number above 0")
