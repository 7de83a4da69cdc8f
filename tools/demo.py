"""The main job on built-in data: make the generated dataset if missing,
train on it on the CPU, evaluate with the real evaluator and save a picture.

    python tools/demo.py detection      # Mask R-CNN + Hire-MLP-Tiny, box/mask AP
    python tools/demo.py segmentation   # Semantic FPN + Hire-MLP-Tiny, mIoU
                                        # single- and multi-scale
    python tools/demo.py detection --backbone conv_mlp  # ... with ConvMLP-S
    python tools/demo.py detection --backbone wave_mlp  # ... with Wave-MLP-T
    python tools/demo.py segmentation --backbone repmlp_net
                                        # UperNet + RepMLPNet-T256,
                                        # Cityscapes layout

--cfg-options changes the demo config as in tools/train.py (the tests run
the demos for a few iterations so). Results go to work_dirs/<demo config>/ (metrics.json, the picture, the log
and the checkpoint).
"""
import argparse
import json
import os.path as osp
from pathlib import Path

import mmcv
import numpy as np
import torch
from mmengine.config import DictAction

from mmhire.datasets.synthetic import (make_ade_shapes, make_cityscapes_shapes,
                                       make_coco_shapes)
from mmhire.engine import build_runner, load_config, tool_session, use_tta
from mmhire.run_lock import claim_work_dir

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'
DEMOS = {  # backbone -> (config, maker of its data)
    'detection': dict(
        configs=dict(
            hire_mlp=(CONFIGS / 'detection/demo/'
                      'mask_rcnn_hire_tiny_synthetic.py', make_coco_shapes),
            conv_mlp=(CONFIGS / 'detection/demo/'
                      'mask_rcnn_convmlp_small_synthetic.py',
                      make_coco_shapes),
            wave_mlp=(CONFIGS / 'detection/demo/'
                      'mask_rcnn_wavemlp_tiny_synthetic.py',
                      make_coco_shapes)),
        metrics=('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP',
                 'coco/segm_mAP_50')),
    'segmentation': dict(
        configs=dict(
            hire_mlp=(CONFIGS / 'segmentation/demo/fpn_hire_tiny_synthetic.py',
                      make_ade_shapes),
            conv_mlp=(CONFIGS / 'segmentation/demo/'
                      'fpn_convmlp_small_synthetic.py', make_ade_shapes),
            wave_mlp=(CONFIGS / 'segmentation/demo/'
                      'fpn_wavemlp_tiny_synthetic.py', make_ade_shapes),
            repmlp_net=(CONFIGS / 'segmentation/demo/'
                        'upernet_repmlp_t256_synthetic_cityscapes.py',
                        make_cityscapes_shapes)),
        metrics=('mIoU', 'aAcc'), multi_scale=True),
}


GRID = 8  # val images in the grid picture
ENLARGE = 3  # so that the drawn class names and scores stay readable


def val_prediction(model, runner, index):
    """The model's prediction on a val image, with its ground truth, through
    the test pipeline."""
    loader = runner.test_dataloader
    with torch.no_grad():
        return model.test_step(loader.collate_fn([loader.dataset[index]]))[0]


def enlarged(result, scale):
    """The prediction and ground truth of a detection, in an image
    ``scale`` times as large."""
    result = result.clone()
    for instances in (result.gt_instances, result.pred_instances):
        boxes = instances.bboxes
        if hasattr(boxes, 'rescale_'):  # mmdet's box types
            boxes = boxes.clone()
            boxes.rescale_((scale, scale))
        else:
            boxes = boxes * scale
        instances.bboxes = boxes
        if 'masks' in instances:
            masks = instances.masks
            instances.masks = masks.rescale(scale) if hasattr(
                masks, 'rescale') else masks.repeat_interleave(
                    scale, 1).repeat_interleave(scale, 2)
    return result


def detection_picture(model, runner, cfg, index, scale=1):
    """Ground truth (left) and predictions (right) of a val image."""
    from mmdet.registry import VISUALIZERS
    result = val_prediction(model, runner, index)
    visualizer = VISUALIZERS.build(dict(cfg.visualizer, name=f'demo{index}'))
    visualizer.dataset_meta = runner.test_dataloader.dataset.metainfo
    image = mmcv.imread(result.img_path, channel_order='rgb')
    if scale != 1:
        image, result = mmcv.imrescale(image, scale), enlarged(result, scale)
    visualizer.add_datasample('prediction', image, result, draw_gt=True,
                              pred_score_thr=0.5)
    return visualizer.get_image()


def segmentation_picture(model, runner, cfg, index, scale=1):
    """A val image, its ground truth and the prediction, coloured."""
    result = val_prediction(model, runner, index)
    palette = runner.test_dataloader.dataset.metainfo['palette']
    palette = np.array([*palette, (0, 0, 0)], np.uint8)
    truth = result.gt_sem_seg.data[0].numpy().copy()
    truth[truth == 255] = len(palette) - 1  # ignored pixels in black
    prediction = result.pred_sem_seg.data[0].numpy()
    image = mmcv.imread(result.img_path, channel_order='rgb')
    picture = np.concatenate([image, palette[truth], palette[prediction]],
                             axis=1)
    return picture.repeat(scale, 0).repeat(scale, 1)


def grid(pictures, columns=2, gap=8):
    """Pictures of one size in rows of ``columns``, white between them."""
    height, width = pictures[0].shape[:2]
    rows = -(-len(pictures) // columns)
    canvas = np.full((rows * (height + gap) - gap,
                      columns * (width + gap) - gap, 3), 255, np.uint8)
    for i, picture in enumerate(pictures):
        top, left = (i // columns) * (height + gap), (i % columns) * (
            width + gap)
        canvas[top:top + height, left:left + width] = picture
    return canvas


PICTURES = {'detection': detection_picture,
            'segmentation': segmentation_picture}


def save_pictures(task, model, runner, cfg):
    """The first val image as it comes, and a grid of the first eight,
    enlarged. Returns their paths."""
    draw = PICTURES[task]
    single = osp.join(cfg.work_dir, f'{task}_prediction.png')
    mmcv.imwrite(draw(model, runner, cfg, 0)[..., ::-1], single)
    count = min(GRID, len(runner.test_dataloader.dataset))
    several = osp.join(cfg.work_dir, f'{task}_predictions_grid.png')
    mmcv.imwrite(grid([draw(model, runner, cfg, i, ENLARGE)
                       for i in range(count)])[..., ::-1], several)
    return single, several


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('task', choices=sorted(DEMOS))
    parser.add_argument('--backbone',
                        choices=['hire_mlp', 'conv_mlp', 'repmlp_net',
                                 'wave_mlp'],
                        default='hire_mlp', help='Hire-MLP-Tiny (default), '
                        'ConvMLP-S, Wave-MLP-T or (segmentation) '
                        'RepMLPNet-T256')
    parser.add_argument('--work-dir', help='defaults to work_dirs/<config>')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the demo config, '
                        'key=value (a shorter schedule, say)')
    args = parser.parse_args()
    demo = DEMOS[args.task]
    if args.backbone not in demo['configs']:
        parser.error(f'no {args.task} demo with --backbone {args.backbone}; '
                     f'choose one of {sorted(demo["configs"])}')
    config, make_data = demo['configs'][args.backbone]
    config = str(config)
    with tool_session():
        cfg = load_config(config, args.cfg_options, args.work_dir)
        if not osp.isdir(cfg.data_root):
            print(f'making the built-in {args.task} data in {cfg.data_root}')
            make_data(cfg.data_root)
        claim_work_dir(cfg.work_dir)
        runner = build_runner(cfg)
        runner.train()  # validates after the last epoch
        metrics = {k: runner.message_hub.get_scalar(f'val/{k}').current()
                   for k in demo['metrics']}
        if demo.get('multi_scale'):
            tta = load_config(config, args.cfg_options, args.work_dir)
            tta.load_from = osp.join(cfg.work_dir, 'iter_%d.pth'
                                     % cfg.train_cfg.max_iters)
            use_tta(tta)
            tested = build_runner(tta).test()
            metrics.update({f'{k} (multi-scale)': tested[k]
                            for k in demo['metrics']})
    single, several = save_pictures(args.task, runner.model.eval(), runner,
                                    cfg)
    summary = {k: round(float(v), 4) for k, v in metrics.items()}
    with open(osp.join(cfg.work_dir, 'metrics.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    print('\n'.join(f'{k}: {v:.3f}' for k, v in summary.items()))
    print(f'picture of the predictions: {several} (the first {GRID} val '
          f'images, ground truth beside predictions; the first alone: '
          f'{single})')


if __name__ == '__main__':
    main()
