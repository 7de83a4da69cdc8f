"""Small generated datasets that a detector or segmentor can really learn.

Each class has its own shape and colour; objects sit on textured backgrounds
(smooth noise plus stripes) so that colour alone is not enough. Everything is
deterministic from the seed.
"""
import json
from pathlib import Path

import cv2
import numpy as np

SHAPES = ('circle', 'square', 'triangle')
COLOURS = ((220, 60, 50), (60, 180, 75), (70, 90, 230))  # RGB per class


def _background(rng, size):
    """Smooth noise with stripes, in muted colours."""
    coarse = rng.uniform(60, 190, (4, 4, 3)).astype(np.float32)
    image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 18)
    yy, xx = np.mgrid[:size, :size]
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi /
                     period)
    image += (stripes * rng.uniform(10, 30))[..., None]
    image += rng.normal(0, 6, image.shape)
    return image


def _polygon(rng, shape, cx, cy, radius):
    """Vertices (N, 2) of a shape centred at (cx, cy)."""
    turn = rng.uniform(0, 2 * np.pi)
    count = {'circle': 24, 'square': 4, 'triangle': 3}[shape]
    angles = turn + np.arange(count) * 2 * np.pi / count
    return np.stack([cx + radius * np.cos(angles),
                     cy + radius * np.sin(angles)], axis=1)


def _layout(rng, size, count, min_radius, max_radius):
    """Non-overlapping (class, polygon) pairs inside the image."""
    placed = []
    for _ in range(count * 20):
        if len(placed) == count:
            break
        label = int(rng.integers(len(SHAPES)))
        radius = rng.uniform(min_radius, max_radius)
        cx, cy = rng.uniform(radius, size - radius, 2)
        if all(np.hypot(cx - x, cy - y) > radius + r + 2
               for _, x, y, r, _ in placed):
            placed.append((label, cx, cy, radius,
                           _polygon(rng, SHAPES[label], cx, cy, radius)))
    return [(label, poly) for label, _, _, _, poly in placed]


def _render(rng, size, objects, background=None):
    """The image (uint8 RGB) and the label map (0 = background)."""
    image = _background(rng, size) if background is None else background
    labels = np.zeros((size, size), np.uint8)
    for label, poly in objects:
        mask = np.zeros((size, size), np.uint8)
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
        colour = np.array(COLOURS[label], np.float32) + rng.normal(0, 12, 3)
        shade = rng.normal(0, 8, (size, size, 1))
        image = np.where(mask[..., None] > 0, colour + shade, image)
        labels[mask > 0] = label + 1
    return np.clip(image, 0, 255).astype(np.uint8), labels


def _save_rgb(path, image):
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def make_coco_shapes(root, num_train=240, num_val=40, size=160, seed=0):
    """Write a COCO-format instance dataset under ``root``:
    ``train/``, ``val/`` and ``annotations/{train,val}.json``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(SHAPES)]
    for split, count in (('train', num_train), ('val', num_val)):
        (root / split).mkdir(exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            objects = _layout(rng, size, int(rng.integers(1, 5)), size / 10,
                              size / 4.5)
            image, _ = _render(rng, size, objects)
            name = f'{index:05d}.png'
            _save_rgb(root / split / name, image)
            images.append(dict(id=index, file_name=name, height=size,
                               width=size))
            for label, poly in objects:
                x0, y0 = np.clip(poly.min(0), 0, size)
                x1, y1 = np.clip(poly.max(0), 0, size)
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=index,
                    category_id=label + 1, iscrowd=0,
                    segmentation=[np.round(poly, 2).ravel().tolist()],
                    area=float(cv2.contourArea(poly.astype(np.float32))),
                    bbox=[float(x0), float(y0), float(x1 - x0),
                          float(y1 - y0)]))
        (root / 'annotations' / f'{split}.json').write_text(json.dumps(
            dict(images=images, annotations=annotations,
                 categories=categories)))
    return root


SEG_CLASSES = ('striped ground', 'speckled ground') + SHAPES


def _ground(rng, size):
    """Two textured regions split by a wavy line: stripes on one side,
    speckles on the other. Returns the image and the region (1 or 2) map;
    a 2-pixel band along the border is left unlabelled (0)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    offset = rng.uniform(0.3, 0.7) * size
    wave = rng.uniform(3, 10) * np.sin(xx * rng.uniform(0.03, 0.1))
    side = (xx - size / 2) * np.sin(angle) + (yy - size / 2) * np.cos(angle) \
        + size / 2 - offset + wave
    stripes = np.sin(yy * 2 * np.pi / rng.uniform(5, 9)) * 35
    speckles = (rng.random((size, size)) < 0.15) * 70 - 20
    tint_a, tint_b = rng.uniform(80, 170, 3), rng.uniform(80, 170, 3)
    image = np.where((side < 0)[..., None], tint_a + stripes[..., None],
                     tint_b + speckles[..., None]).astype(np.float32)
    regions = np.where(side < 0, 1, 2).astype(np.uint8)
    regions[np.abs(side) < 1] = 0
    return image, regions


def _region_scene(rng, size):
    """A square scene of the two grounds with 1-3 shapes on them: the
    image and its labels (0 unlabelled, 1-2 the grounds, 3-5 the shapes,
    in the order of ``SEG_CLASSES``)."""
    ground, regions = _ground(rng, size)
    objects = _layout(rng, size, int(rng.integers(1, 4)), size / 10,
                      size / 5)
    image, shapes = _render(rng, size, objects, ground)
    return image, np.where(shapes > 0, shapes + 2, regions)


def make_ade_shapes(root, num_train=200, num_val=40, size=128, seed=0):
    """Write an ADE20K-format dataset under ``root``: ``images/training``,
    ``annotations/training``, ``images/validation``,
    ``annotations/validation``. Label 0 is unlabelled (ignored, as in
    ADE20K); classes are 1..5 in the order of ``SEG_CLASSES``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (('training', num_train), ('validation', num_val)):
        (root / 'images' / split).mkdir(parents=True, exist_ok=True)
        (root / 'annotations' / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, labels = _region_scene(rng, size)
            name = f'ADE_{split[:5]}_{index + 1:08d}'
            _save_rgb(root / 'images' / split / f'{name}.jpg', image)
            cv2.imwrite(str(root / 'annotations' / split / f'{name}.png'),
                        labels.astype(np.uint8))
    return root


# Cityscapes train ids given to the generated regions and shapes.
CITYSCAPES_IDS = (0, 8, 11, 13, 18)  # road, vegetation, person, car, bicycle


def make_cityscapes_shapes(root, num_train=200, num_val=40, size=(128, 256),
                           seed=0):
    """Write a Cityscapes-format dataset under ``root`` as mmseg reads it
    after ``tools/dataset_converters/cityscapes.py``: ``leftImg8bit/{split}/
    {city}/{name}_leftImg8bit.png`` and ``gtFine/{split}/{city}/
    {name}_gtFine_labelTrainIds.png``, with the generated regions and shapes
    as the Cityscapes classes ``CITYSCAPES_IDS`` (255 is ignored)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    height, width = size
    for split, count, city in (('train', num_train, 'aachen'),
                               ('val', num_val, 'frankfurt')):
        images = root / 'leftImg8bit' / split / city
        labels = root / 'gtFine' / split / city
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            # Square scenes side by side make one 1:2 frame.
            halves = [_region_scene(rng, height)
                      for _ in range(width // height)]
            image = np.concatenate([h[0] for h in halves], axis=1)
            label = np.concatenate([h[1] for h in halves], axis=1)
            train_ids = np.array((255, ) + CITYSCAPES_IDS, np.uint8)[label]
            name = f'{city}_{index:06d}_000019'
            _save_rgb(images / f'{name}_leftImg8bit.png', image)
            cv2.imwrite(str(labels / f'{name}_gtFine_labelTrainIds.png'),
                        train_ids)
    return root
