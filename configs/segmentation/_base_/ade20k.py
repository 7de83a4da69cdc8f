# ADE20K at data/ade/ADEChallengeData2016: 512x512 crops of images randomly
# rescaled in [0.5, 2.0] x (2048, 512), flips, photometric distortion
# (supplement C.2); 2 images per GPU on 8 GPUs.
_base_ = 'mmseg::_base_/datasets/ade20k.py'

train_dataloader = dict(batch_size=2)

# Multi-scale testing (tools/test.py --tta): 0.5 .. 1.5 x the training scale
# (2048, 512), as in mmseg 0.x where the paper's figures were made (mmseg
# 1.x's own TTA scales the raw image instead), each also flipped.
# SegTTAModel averages the softmax over all of them.
train_scale = (2048, 512)
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', keep_ratio=True,
              scale=(int(train_scale[0] * r), int(train_scale[1] * r)))
         for r in (0.5, 0.75, 1.0, 1.25, 1.5)],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')],
        [dict(type='PackSegInputs')],
    ]),
]
