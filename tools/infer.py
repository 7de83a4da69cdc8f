"""Predict on your own images with a trained detector or segmentor.

    python tools/infer.py INPUT CONFIG CHECKPOINT [--out-dir DIR]
                          [--score-thr T] [--deploy] [--device cpu|cuda]

INPUT is an image, a folder of images or a glob ('photos/*.jpg'). For a
detection config, DIR/vis/NAME shows each image with its boxes, masks and
class names, and DIR/preds/NAME.json holds its raw predictions (boxes,
scores, labels, class names, masks as COCO RLE); for a segmentation config,
DIR/vis/NAME is the coloured mask blended over the image,
DIR/preds/NAME.png the class index of each pixel and DIR/preds/NAME.json
the pixel count of each class. mmdet's DetInferencer and
mmseg's MMSegInferencer do the work; an unreadable image is skipped with
one line naming it.
"""
import argparse
import glob
import json
import os
import os.path as osp

import mmcv
import numpy as np
from mmengine.utils import ProgressBar

from mmhire.checkpoint import check_readable
from mmhire.engine import load_config, resolve_device, tool_session
from mmhire.errors import MMHireError
from mmhire.models import switch_to_deploy

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def find_images(source):
    if osp.isdir(source):
        found = [osp.join(source, name) for name in os.listdir(source)
                 if name.lower().endswith(IMAGE_SUFFIXES)]
    elif osp.isfile(source):
        found = [source]
    else:
        found = glob.glob(source)
    if not found:
        raise MMHireError(f'no images at {source!r}: give an image file, a '
                          'folder of images or a glob such as "photos/*.jpg".')
    return sorted(found)


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


def build_inferencer(cfg, checkpoint, device, score_thr):
    """``(inferencer, its options per call, the JSON record of a
    prediction)`` for the config's library."""
    if cfg.default_scope == 'mmdet':
        from mmdet.apis import DetInferencer
        inferencer = DetInferencer(model=cfg, weights=checkpoint,
                                   device=device, show_progress=False)
        return (inferencer, dict(pred_score_thr=score_thr),
                detection_record)
    if cfg.default_scope == 'mmseg':
        from mmseg.apis import MMSegInferencer
        inferencer = MMSegInferencer(model=cfg, weights=checkpoint,
                                     device=device)
        inferencer.show_progress = False
        return (inferencer, dict(img_out_dir='vis', pred_out_dir='preds'),
                segmentation_record)
    raise MMHireError(f'{cfg.filename!r} is neither an mmdet nor an mmseg '
                      f'config (default_scope {cfg.default_scope!r}).')


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
        images = find_images(args.input)
        check_readable(args.checkpoint)
        cfg = load_config(args.config)
        device = resolve_device(args.device)
        inferencer, options, record = build_inferencer(
            cfg, args.checkpoint, device, args.score_thr)
        if args.deploy:
            switch_to_deploy(inferencer.model)
        classes = inferencer.model.dataset_meta['classes']
        preds_dir = osp.join(args.out_dir, 'preds')
        os.makedirs(preds_dir, exist_ok=True)
        skipped = []
        progress = ProgressBar(len(images))
        for path in images:
            if not readable(path):
                skipped.append(path)
                print(f'\nskipped {path}: not a readable image', flush=True)
            else:
                result = inferencer(path, out_dir=args.out_dir, **options)
                name = osp.splitext(osp.basename(path))[0]
                prediction = result['predictions']  # one image: not a list
                with open(osp.join(preds_dir, f'{name}.json'), 'w') as f:
                    json.dump(record(prediction[0] if isinstance(
                        prediction, list) else prediction, classes), f)
                # MMSegInferencer numbers its class-index PNGs; name it.
                for numbered in glob.glob(osp.join(preds_dir, '*_pred.png')):
                    os.replace(numbered, osp.join(preds_dir, f'{name}.png'))
            progress.update()
        done = len(images) - len(skipped)
        if not done:
            raise MMHireError(f'none of the {len(images)} inputs is a '
                              'readable image; nothing was predicted.')
    print(f'\n{done} images: pictures in {osp.join(args.out_dir, "vis")}, '
          f'predictions in {preds_dir}'
          + (f'; {len(skipped)} skipped' if skipped else ''))


if __name__ == '__main__':
    main()
