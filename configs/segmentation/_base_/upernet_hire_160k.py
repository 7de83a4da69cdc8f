# UperNet with Hire-MLP, supplement C.2: AdamW, lr 6e-5 decayed linearly,
# weight decay 0.01, 160k iterations; auxiliary FCN head on the third stage.
# Silent there, taken from mmseg's Swin UperNet configs: 1500 iterations of
# linear warm-up, no decay on norms, mmseg's UperNet and FCN heads (512 and
# 256 channels, SyncBN).
_base_ = ['mmseg::_base_/models/upernet_r50.py',
          'mmseg::_base_/schedules/schedule_160k.py', './hire_runtime.py']

model = dict(
    pretrained=None,
    data_preprocessor=dict(size=(512, 512)),  # the crop size
    backbone=dict(_delete_=True, **_base_.hire_backbone),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(in_index=2, num_classes=150))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=6e-5, betas=(0.9, 0.999),
                   weight_decay=0.01),
    paramwise_cfg=dict(norm_decay_mult=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
         end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, begin=1500, end=160000,
         by_epoch=False),
]
