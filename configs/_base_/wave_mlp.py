# What every Wave-MLP config shares: the plugin import and the backbone.
custom_imports = dict(imports=['mmhire'], allow_failed_imports=False)

# Frameworks put this in model.backbone; each config sets arch and the
# released ImageNet checkpoint. As the authors' dense path (their fork_feat
# code): all four maps, each through a fresh norm of the variant's kind.
# Presumed, as the paper's dense-prediction settings are not available:
# SyncBN for the BatchNorm layers (T: all; S, M: the phase convolutions'
# only, their other norms stay GroupNorm), nothing frozen and no drop path
# (the PoolFormer dense configs their code comes from set none).
wavemlp_backbone = dict(
    type='WaveMLP',
    arch='T',
    out_indices=(0, 1, 2, 3),
    drop_path_rate=0.,
    norm_cfg=dict(type='SyncBN', requires_grad=True),
    init_cfg=dict(type='Pretrained', checkpoint=None))
