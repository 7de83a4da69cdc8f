# COCO 2017 instances at data/coco/ in mmdet's layout; single-scale 1333x800
# training (supplement C.1), 4 images per GPU.
_base_ = 'mmdet::_base_/datasets/coco_instance.py'

train_dataloader = dict(batch_size=4, num_workers=4)
