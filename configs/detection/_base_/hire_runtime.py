# What every Hire-MLP detector shares: the plugin import, the backbone, the
# optimizer of the supplement (C.1) and mmdet's default runtime.
_base_ = 'mmdet::_base_/default_runtime.py'

custom_imports = dict(imports=['mmhire'], allow_failed_imports=False)

# Frameworks put this in model.backbone; each config sets arch, drop path and
# the released ImageNet checkpoint. SyncBN as in the authors' dense-prediction
# code; tools/train.py falls back to BN without CUDA or in a single process.
hire_backbone = dict(
    type='HireMLP',
    arch='small',
    drop_path_rate=0.2,
    norm_cfg=dict(type='SyncBN', requires_grad=True),
    init_cfg=dict(type='Pretrained', checkpoint=None))

# Supplement C.1: AdamW, lr 2e-4, weight decay 0.05, 4 images per GPU on 8
# GPUs. It is silent on decay for norms: none, as mmdet's Swin configs do.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999),
                   weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.))

# --auto-scale-lr rescales lr by (GPUs x images per GPU) / 32.
auto_scale_lr = dict(enable=False, base_batch_size=32)
