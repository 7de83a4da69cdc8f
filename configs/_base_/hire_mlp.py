# What every Hire-MLP config shares: the plugin import and the backbone.
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
