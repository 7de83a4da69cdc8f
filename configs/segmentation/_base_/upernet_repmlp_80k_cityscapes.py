# UperNet with RepMLPNet on Cityscapes, 80k iterations (paper section 5.3,
# Table 6). From the paper: mmseg's UperNet, 80k iterations, training at
# 512x1024 and testing the whole 1024x2048 image, 3x3 (or 5x5) stride-2
# embeddings instead of the released 2x2 ones. Everything else is presumed:
# the paper gives no optimizer, batch or heads, so these are mmseg's stock
# upernet_r101_4xb2-80k_cityscapes-512x1024 settings: SGD lr 0.01, momentum
# 0.9, weight decay 5e-4, poly decay (power 0.9) to 1e-4; 2 images per GPU on
# 4 GPUs; UPerHead with 512 channels and an FCN auxiliary head (weight 0.4)
# on the third map; SyncBN. Cityscapes at data/cityscapes/ in mmseg's layout
# (leftImg8bit/, gtFine/ with *_gtFine_labelTrainIds.png; see the README).
_base_ = ['mmseg::_base_/models/upernet_r50.py',
          'mmseg::_base_/datasets/cityscapes.py',
          'mmseg::_base_/default_runtime.py',
          'mmseg::_base_/schedules/schedule_80k.py',
          '../../_base_/repmlp_net.py']

custom_imports = dict(imports=['mmhire'], allow_failed_imports=False)
crop_size = (512, 1024)
model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(_delete_=True, **{**_base_.repmlp_backbone,
                                    'embed_kernel': 3}),
    decode_head=dict(num_classes=19),
    auxiliary_head=dict(in_index=2, num_classes=19))
