# What every Hire-MLP segmentor shares: the plugin import, the backbone and
# mmseg's default runtime (which also defines tta_model = SegTTAModel).
_base_ = 'mmseg::_base_/default_runtime.py'

custom_imports = dict(imports=['mmhire'], allow_failed_imports=False)

# Frameworks put this in model.backbone; each config sets arch, drop path and
# the released ImageNet checkpoint. SyncBN as in the authors' code (and in
# mmseg's heads); tools/train.py falls back to BN without CUDA or in a single
# process.
hire_backbone = dict(
    type='HireMLP',
    arch='small',
    drop_path_rate=0.2,
    norm_cfg=dict(type='SyncBN', requires_grad=True),
    init_cfg=dict(type='Pretrained', checkpoint=None))
