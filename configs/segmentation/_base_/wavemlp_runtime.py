# What every Wave-MLP segmentor shares: the plugin and its backbone, and
# mmseg's default runtime (which also defines tta_model = SegTTAModel).
_base_ = ['mmseg::_base_/default_runtime.py', '../../_base_/wave_mlp.py']
