# Semantic FPN on ADE20K as the ConvMLP authors' mmseg 0.x config has it,
# and PoolFormer's, which the Wave-MLP configs presume: AdamW, lr 2e-4,
# weight decay 1e-4 on every parameter, polynomial decay (power 0.9) over
# 40k iterations without warm-up, 4 images per GPU on 8 GPUs (Hire-MLP: lr
# 1e-4, weight decay 0.05, 2 images per GPU); mmseg's FPN head (128
# channels, SyncBN), 512x512 crops, single-scale test at (2048, 512). --tta
# as for Hire-MLP. Each backbone's base adds the backbone and its runtime.
_base_ = ['mmseg::_base_/models/fpn_r50.py',
          'mmseg::_base_/schedules/schedule_40k.py', './ade20k.py']

model = dict(
    pretrained=None,
    data_preprocessor=dict(size=(512, 512)),  # the crop size
    decode_head=dict(num_classes=150))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, betas=(0.9, 0.999),
                   weight_decay=1e-4))
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=40000,
         by_epoch=False),
]
train_dataloader = dict(batch_size=4)
