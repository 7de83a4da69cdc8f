# Semantic FPN with Hire-MLP, supplement C.2: AdamW, lr 1e-4, weight decay
# 0.05, polynomial decay (power 0.9) over 40k iterations. Silent there, taken
# from mmseg's PoolFormer FPN configs: no warm-up, decay on every parameter,
# mmseg's FPN head (128 channels, SyncBN).
_base_ = ['mmseg::_base_/models/fpn_r50.py',
          'mmseg::_base_/schedules/schedule_40k.py', './hire_runtime.py']

model = dict(
    pretrained=None,
    data_preprocessor=dict(size=(512, 512)),  # the crop size
    backbone=dict(_delete_=True, **_base_.hire_backbone),
    decode_head=dict(num_classes=150))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                   weight_decay=0.05))
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=40000,
         by_epoch=False),
]
