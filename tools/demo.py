"""The main job on built-in data: make the generated dataset if missing,
train on it on the CPU, evaluate with the real evaluator and save a picture.

    python tools/demo.py detection      # Mask R-CNN + Hire-MLP-Tiny, box/mask AP
    python tools/demo.py segmentation   # Semantic FPN + Hire-MLP-Tiny, mIoU
                                        # single- and multi-scale
    python tools/demo.py detection --backbone convmlp   # ... with ConvMLP-S

Results go to work_dirs/<demo config>/ (metrics.json, the picture, the log
and the checkpoint).
"""
import argparse
import json
import os.path as osp
from pathlib import Path

import mmcv
import numpy as np
import torch

from mmhire.datasets.synthetic import make_ade_shapes, make_coco_shapes
from mmhire.engine import build_runner, load_config, tool_session, use_tta

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'
DEMOS = {
    'detection': dict(
        configs=dict(
            hire=CONFIGS / 'detection/demo/mask_rcnn_hire_tiny_synthetic.py',
            convmlp=CONFIGS / 'detection/demo/'
            'mask_rcnn_convmlp_small_synthetic.py'),
        make_data=make_coco_shapes,
        metrics=('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP',
                 'coco/segm_mAP_50')),
    'segmentation': dict(
        configs=dict(
            hire=CONFIGS / 'segmentation/demo/fpn_hire_tiny_synthetic.py',
            convmlp=CONFIGS / 'segmentation/demo/'
            'fpn_convmlp_small_synthetic.py'),
        make_data=make_ade_shapes, metrics=('mIoU', 'aAcc'),
        multi_scale=True),
}


def first_val_prediction(model, runner):
    """The model's prediction on the first val image, with its ground truth,
    through the test pipeline."""
    loader = runner.test_dataloader
    with torch.no_grad():
        return model.test_step(loader.collate_fn([loader.dataset[0]]))[0]


def save_detection_picture(model, runner, cfg, path):
    """Predictions on the first val image, drawn beside its ground truth."""
    from mmdet.registry import VISUALIZERS
    result = first_val_prediction(model, runner)
    visualizer = VISUALIZERS.build(cfg.visualizer)
    visualizer.dataset_meta = runner.test_dataloader.dataset.metainfo
    image = mmcv.imread(result.img_path, channel_order='rgb')
    visualizer.add_datasample('prediction', image, result, draw_gt=True,
                              pred_score_thr=0.5, out_file=path)


def save_segmentation_picture(model, runner, cfg, path):
    """The first val image, its ground truth and the prediction, coloured."""
    result = first_val_prediction(model, runner)
    palette = runner.test_dataloader.dataset.metainfo['palette']
    palette = np.array([*palette, (0, 0, 0)], np.uint8)
    truth = result.gt_sem_seg.data[0].numpy().copy()
    truth[truth == 255] = len(palette) - 1  # ignored pixels in black
    prediction = result.pred_sem_seg.data[0].numpy()
    image = mmcv.imread(result.img_path, channel_order='rgb')
    mmcv.imwrite(np.concatenate([image, palette[truth], palette[prediction]],
                                axis=1)[..., ::-1], path)


PICTURES = {'detection': save_detection_picture,
            'segmentation': save_segmentation_picture}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('task', choices=sorted(DEMOS))
    parser.add_argument('--backbone', choices=['hire', 'convmlp'],
                        default='hire', help='Hire-MLP-Tiny (default) or '
                        'ConvMLP-S')
    parser.add_argument('--work-dir', help='defaults to work_dirs/<config>')
    args = parser.parse_args()
    demo = DEMOS[args.task]
    config = str(demo['configs'][args.backbone])
    with tool_session():
        cfg = load_config(config, work_dir=args.work_dir)
        if not osp.isdir(cfg.data_root):
            print(f'making the built-in {args.task} data in {cfg.data_root}')
            demo['make_data'](cfg.data_root)
        runner = build_runner(cfg)
        runner.train()  # validates after the last epoch
        metrics = {k: runner.message_hub.get_scalar(f'val/{k}').current()
                   for k in demo['metrics']}
        if demo.get('multi_scale'):
            tta = load_config(config, work_dir=args.work_dir)
            tta.load_from = osp.join(cfg.work_dir, 'iter_%d.pth'
                                     % cfg.train_cfg.max_iters)
            use_tta(tta)
            tested = build_runner(tta).test()
            metrics.update({f'{k} (multi-scale)': tested[k]
                            for k in demo['metrics']})
    picture = osp.join(cfg.work_dir, f'{args.task}_prediction.png')
    PICTURES[args.task](runner.model.eval(), runner, cfg, picture)
    summary = {k: round(float(v), 4) for k, v in metrics.items()}
    with open(osp.join(cfg.work_dir, 'metrics.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    print('\n'.join(f'{k}: {v:.3f}' for k, v in summary.items()))
    print(f'picture of the predictions: {picture}')


if __name__ == '__main__':
    main()
