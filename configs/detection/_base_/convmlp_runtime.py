# What every ConvMLP detector shares: the plugin and its backbone, and the
# authors' optimizer and 1x schedule (their mmdet 2.x configs).
_base_ = ['./adamw_1x.py', '../../_base_/convmlp.py']
