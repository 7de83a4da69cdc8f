# What every ConvMLP config shares: the plugin import and the backbone.
custom_imports = dict(imports=['mmhire'], allow_failed_imports=False)

# Frameworks put this in model.backbone; each config sets arch and the
# released ImageNet checkpoint. As in the authors' detection and segmentation
# code: all four maps, no norm on them, plain BN in training mode (per-GPU
# statistics; set norm_cfg=dict(type='SyncBN') to share them), nothing
# frozen, and drop path at their hard-coded 0.1 per stage.
convmlp_backbone = dict(
    type='ConvMLP',
    arch='small',
    out_indices=(0, 1, 2, 3),
    drop_path_rate=0.1,
    norm_cfg=dict(type='BN', requires_grad=True),
    init_cfg=dict(type='Pretrained', checkpoint=None))
