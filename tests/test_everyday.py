"""Everyday use: inference on a folder of your own images, and test.py's
--out / --show-dir, for a detector and a segmentor, with --tta too."""
import json
import os
import pickle
import re
import shutil
import stat

import pytest
import torch
from conftest import ROOT, refused, run_tool

from mmhire.checkpoint import safe_load

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
    names = sorted(p.name for p in images.iterdir() if p.name != 'broken.jpg')
    assert sorted(p.name for p in (tmp_path / 'out/vis').iterdir()) == names
    for name in names:
        record = json.loads(
            (tmp_path / f'out/preds/{name}.json').read_text())
        if task == 'detection':
            assert len(record['labels']) == len(record['scores']) == \
                len(record['bboxes']) == len(record['classes']) > 0
            assert set(record['classes']) <= {'circle', 'square', 'triangle'}
            assert all(len(box) == 4 for box in record['bboxes'])
        else:
            assert (record['height'], record['width']) == (128, 128)
            assert sum(record['pixels'].values()) == 128 * 128
            assert (tmp_path / f'out/preds/{name}.png').is_file()


def test_infer_names_outputs_that_cannot_collide(seg_checkpoint, tmp_path):
    """Inputs sharing a stem (a.jpg, a.png), a glob over two folders with
    the same file name, and an input named like a prediction (b_pred.jpg)
    each get outputs of their own."""
    source = sorted((seg_checkpoint.parents[2] /
                     'data/synthetic_ade/images/validation').iterdir())
    for folder, names in (('x', ['a.jpg', 'b_pred.jpg']), ('y', ['a.jpg'])):
        (tmp_path / 'in' / folder).mkdir(parents=True)
        for name, image in zip(names, source):
            shutil.copy(image, tmp_path / 'in' / folder / name)
    (tmp_path / 'in/x/a.png').write_bytes(source[2].read_bytes())
    result = run_tool(['tools/infer.py', 'in/*/*', SEG, str(seg_checkpoint),
                       '--out-dir', 'out'], cwd=tmp_path)
    assert '4 images' in result.stdout
    inputs = ['x/a.jpg', 'x/a.png', 'x/b_pred.jpg', 'y/a.jpg']
    for name in inputs:
        assert (tmp_path / 'out/vis' / name).is_file()
        assert (tmp_path / 'out/preds' / f'{name}.json').is_file()
    masks = [(tmp_path / 'out/preds' / f'{name}.png').read_bytes()
             for name in inputs]
    assert len(set(masks)) == 3  # x/a.jpg and y/a.jpg are the same image


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
    result, _ = refused(['tools/test.py', DET, str(det_checkpoint), '--show'],
                        det_checkpoint.parents[2], env={'DISPLAY': ''})
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
    _, last = refused(['tools/infer.py', str(tmp_path / 'broken.jpg'), SEG,
                       str(seg_checkpoint), '--out-dir', 'out', *args],
                      tmp_path)
    assert says in last


class _Runs:
    def __reduce__(self):
        return (print, ('this ran',))


def refused_checkpoints(folder, det_checkpoint, seg_checkpoint):
    """name -> (a checkpoint the segmentation demo must not load, what the
    refusal says)."""
    checkpoint = safe_load(seg_checkpoint)
    backbone = {k[len('backbone.'):]: v
                for k, v in checkpoint['state_dict'].items()
                if k.startswith('backbone.')}
    torch.save({'state_dict': backbone}, folder / 'backbone_only.pth')
    torch.save({'state_dict': checkpoint['state_dict'], 'x': _Runs()},
               folder / 'unsafe.pth')
    (folder / 'text.pth').write_text('config: not a checkpoint\n')
    return {
        'detector': (det_checkpoint, "the file looks like a detector with a "
                     "ConvMLP 'small' backbone"),
        'backbone-only': (folder / 'backbone_only.pth',
                          "the file looks like a bare Hire-MLP 'tiny' "
                          'backbone'),
        'unsafe': (folder / 'unsafe.pth', 'print, which no weights file '
                   'needs, so it was not unpickled and nothing in it ran'),
        'text': (folder / 'text.pth', 'not a file written by torch.save'),
    }


REFUSING = {  # tool -> its command, CHECKPOINT standing for the file
    'infer': ['tools/infer.py', 'photo.jpg', SEG, 'CHECKPOINT', '--out-dir',
              'out'],
    'test': ['tools/test.py', SEG, 'CHECKPOINT', '--work-dir', 'out'],
    'resume': ['tools/train.py', SEG, '--resume', 'CHECKPOINT', '--work-dir',
               'out'],
}


@pytest.mark.parametrize('tool,kind', [
    ('infer', 'detector'), ('infer', 'backbone-only'), ('infer', 'unsafe'),
    ('test', 'text'), ('resume', 'detector'),
    ('resume', 'unsafe')])
def test_a_checkpoint_that_must_not_load_is_refused_in_one_line(
        det_checkpoint, seg_checkpoint, tmp_path, tool, kind):
    """infer, test and train --resume answer alike, before writing anything,
    and never pass on torch's advice to load without weights_only."""
    checkpoint, says = refused_checkpoints(tmp_path, det_checkpoint,
                                           seg_checkpoint)[kind]
    data = seg_checkpoint.parents[2]
    for name in ('data', 'photo.jpg'):
        (tmp_path / name).symlink_to(data / name if name == 'data' else next(
            (data / 'data/synthetic_ade/images/validation').iterdir()))
    result, last = refused([str(checkpoint) if a == 'CHECKPOINT' else a
                            for a in REFUSING[tool]], tmp_path)
    assert says in last, last
    assert 'weights_only' not in result.stderr + result.stdout
    assert 'this ran' not in result.stdout
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('command', [
    ['tools/infer.py', 'photos', SEG, '{checkpoint}', '--out-dir',
     'blocker/out'],
    ['tools/test.py', SEG, '{checkpoint}', '--show-dir', 'drawn', '--out',
     'blocker/labels'],
    ['tools/train.py', SEG, '--work-dir', 'blocker/run'],
    ['tools/convert_checkpoint.py', '{checkpoint}', 'blocker/clean.pth'],
], ids=['infer', 'test', 'train', 'convert'])
def test_an_unwritable_output_is_refused_before_the_run(
        seg_checkpoint, tmp_path, command):
    """A file where an output folder must go (as a folder without write
    permission would, which root cannot be refused): one line, before
    anything runs or is written."""
    cwd = seg_checkpoint.parents[2]
    (cwd / 'blocker').write_text('in the way')
    (cwd / 'photos').mkdir(exist_ok=True)
    shutil.copy(next((cwd / 'data/synthetic_ade/images/validation').iterdir()),
                cwd / 'photos/a.jpg')
    before = sorted(p for p in cwd.rglob('*'))
    result, last = refused([a.format(checkpoint=seg_checkpoint)
                            for a in command], cwd)
    assert last.endswith(
        f'{cwd / "blocker"} is a file, not a folder; choose another path.')
    assert sorted(p for p in cwd.rglob('*')) == before
    assert 'Epoch' not in result.stdout + result.stderr


def test_infer_refuses_outputs_that_would_overwrite_its_inputs(
        seg_checkpoint, tmp_path):
    (tmp_path / 'out/vis').mkdir(parents=True)
    shutil.copy(next((seg_checkpoint.parents[2] / 'data/synthetic_ade/images/'
                      'validation').iterdir()), tmp_path / 'out/vis/a.jpg')
    image = (tmp_path / 'out/vis/a.jpg').read_bytes()
    _, last = refused(['tools/infer.py', 'out/vis', SEG, str(seg_checkpoint),
                       '--out-dir', 'out'], tmp_path)
    assert last == (
        'error: --out-dir out: the output out/vis/a.jpg would overwrite an '
        'input image; choose an --out-dir outside the input folder.')
    assert (tmp_path / 'out/vis/a.jpg').read_bytes() == image
    assert not (tmp_path / 'out/preds').exists()


def test_backbone_channels_are_checked_against_the_neck(small_coco):
    _, last = refused(['tools/train.py', DET, '--cfg-options',
                       'model.backbone.out_indices=(1,2,3)'], small_coco)
    assert last == (
        'error: model.neck.in_channels is [64, 128, 256, 512], but ConvMLP '
        'with out_indices (1, 2, 3) returns 3 maps of [128, 256, 512] '
        'channels; set in_channels=[128, 256, 512] or out_indices to match.')


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
