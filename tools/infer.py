"""Predict on your own images with a trained detector or segmentor.

    python tools/infer.py INPUT CONFIG CHECKPOINT [--out-dir DIR]
                          [--score-thr T] [--deploy] [--device cpu|cuda]

INPUT is an image, a folder of images or a glob ('photos/*.jpg'). Each
image's outputs are named by its path below the input folder (for a glob,
the folder its matches share), extension kept, so no two inputs share an
output: for a detection config, DIR/vis/NAME shows the image with its
boxes, masks and class names, and DIR/preds/NAME.json holds its raw
predictions (boxes, scores, labels, class names, masks as COCO RLE); for a
segmentation config, DIR/vis/NAME is the coloured mask blended over the
image, DIR/preds/NAME.png the class index of each pixel and
DIR/preds/NAME.json the pixel count of each class (NAME is e.g. a.jpg, so
a.jpg.json). mmdet's DetInferencer and mmseg's MMSegInferencer do the work.
A checkpoint that does not fit the config, or outputs that would overwrite
an input, stop the run before anything is written; an unreadable image is
skipped with one line naming it.
"""
import argparse
import glob
import json
import os
import os.path as osp

import mmcv
import numpy as np
from mmengine.utils import ProgressBar

from mmhire.checks import check_fits, check_writable, resolve_device
from mmhire.engine import load_config, tool_session
from mmhire.errors import MMHireError
from mmhire.models import switch_to_deploy

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def find_images(source):
    """``(the images, the folder their output names are relative to)``."""
    if osp.isdir(source):
        found = [osp.join(source, name) for name in os.listdir(source)
                 if name.lower().endswith(IMAGE_SUFFIXES)]
    elif osp.isfile(source):
        found = [source]
    else:
        found = [path for path in glob.glob(source) if osp.isfile(path)]
    if not found:
        raise MMHireError(f'no images at {source!r}: give an image file, a '
                          'folder of images or a glob such as "photos/*.jpg".')
    root = source if osp.isdir(source) else osp.commonpath(
        [osp.dirname(osp.abspath(path)) for path in found])
    return sorted(found), root


def output_paths(images, root, out_dir, suffixes):
    """For each image, ``{kind: path}`` (kinds ``vis``, ``json`` and, for
    segmentation, ``png``), named by its path below ``root``; refused where
    an output would overwrite an input."""
    outputs = []
    for path in images:
        name = osp.relpath(osp.abspath(path), osp.abspath(root))
        outputs.append({kind: osp.join(out_dir, folder, name + suffix)
                        for kind, (folder, suffix) in suffixes.items()})
    inputs = {osp.realpath(path) for path in images}
    for paths in outputs:
        for path in paths.values():
            if osp.realpath(path) in inputs:
                raise MMHireError(
                    f'--out-dir {out_dir}: the output {path} would overwrite '
                    'an input image; choose an --out-dir outside the input '
                    'folder.')
    return outputs


def readable(path):
    try:
        return mmcv.imread(path) is not None
    except Exception:  # any decoder error means the same: skip it
        return False


def detection_record(prediction, classes):
    return dict(prediction, classes=[classes[i] for i in prediction['labels']])


def segmentation_record(prediction, classes):
    labels, counts = np.unique(prediction, return_counts=True)
    height, width = prediction.shape
    return dict(height=int(height), width=int(width),
                pixels={classes[int(label)]: int(count)
                        for label, count in zip(labels, counts)})


# Each image's outputs: kind -> (folder, suffix after the image's name).
OUTPUTS = dict(mmdet=dict(vis=('vis', ''), json=('preds', '.json')),
               mmseg=dict(vis=('vis', ''), json=('preds', '.json'),
                          png=('preds', '.png')))


def build_inferencer(cfg, checkpoint, device, score_thr):
    """``(inferencer, its options per call, the JSON record of a
    prediction)`` for the config's library."""
    if cfg.default_scope == 'mmdet':
        from mmdet.apis import DetInferencer
        inferencer = DetInferencer(model=cfg, weights=checkpoint,
                                   device=device, show_progress=False)
        return (inferencer, dict(pred_score_thr=score_thr),
                detection_record)
    from mmseg.apis import MMSegInferencer
    inferencer = MMSegInferencer(model=cfg, weights=checkpoint, device=device)
    inferencer.show_progress = False
    return inferencer, {}, segmentation_record


def save(result, paths, record, classes):
    """An image's picture, JSON record and (segmentation) class-index PNG."""
    prediction = result['predictions']  # one image: not a list
    prediction = prediction[0] if isinstance(prediction, list) else prediction
    mmcv.imwrite(result['visualization'][0][..., ::-1], paths['vis'])
    os.makedirs(osp.dirname(paths['json']), exist_ok=True)
    with open(paths['json'], 'w') as f:
        json.dump(record(prediction, classes), f)
    if 'png' in paths:
        mmcv.imwrite(prediction.astype(np.uint8), paths['png'])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('input', help='an image, a folder or a glob')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out-dir', default='outputs')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detections drawn at or above this score')
    parser.add_argument('--deploy', action='store_true',
                        help="fold the backbone's BatchNorms for inference")
    parser.add_argument('--device', default=None,
                        help='cpu or cuda (default: cuda where there is one)')
    args = parser.parse_args()
    with tool_session():
        images, root = find_images(args.input)
        cfg = load_config(args.config)
        device = resolve_device(args.device)
        if cfg.default_scope not in OUTPUTS:
            raise MMHireError(
                f'{args.config!r} is neither an mmdet nor an mmseg config '
                f'(default_scope {cfg.default_scope!r}).')
        check_fits(cfg, args.checkpoint)
        check_writable(args.out_dir, '--out-dir')
        outputs = output_paths(images, root, args.out_dir,
                               OUTPUTS[cfg.default_scope])
        inferencer, options, record = build_inferencer(
            cfg, args.checkpoint, device, args.score_thr)
        if args.deploy:
            switch_to_deploy(inferencer.model)
        classes = inferencer.model.dataset_meta['classes']
        skipped = []
        progress = ProgressBar(len(images))
        for path, paths in zip(images, outputs):
            if not readable(path):
                skipped.append(path)
                print(f'\nskipped {path}: not a readable image', flush=True)
            else:
                result = inferencer(path, return_vis=True, out_dir='',
                                    **options)
                save(result, paths, record, classes)
            progress.update()
        done = len(images) - len(skipped)
        if not done:
            raise MMHireError(f'none of the {len(images)} inputs is a '
                              'readable image; nothing was predicted.')
    print(f'\n{done} images: pictures in {osp.join(args.out_dir, "vis")}, '
          f'predictions in {osp.join(args.out_dir, "preds")}'
          + (f'; {len(skipped)} skipped' if skipped else ''))


if __name__ == '__main__':
    main()
