# What every Wave-MLP detector shares: the plugin and its backbone, and an
# optimizer and 1x schedule. Presumed (the paper's COCO settings are not
# available): those of the PoolFormer configs the authors' dense code comes
# from, adamw_1x.py with lr 2e-4, 1333x800.
_base_ = ['./adamw_1x.py', '../../_base_/wave_mlp.py']

optim_wrapper = dict(optimizer=dict(lr=2e-4))
