"""A config's ``custom_imports=dict(imports=['mmhire'])`` is all it takes to
build every backbone through mmdet's and mmseg's registries."""
import subprocess
import sys
import textwrap

import pytest
from cases import CASES

from mmhire.models import BACKBONES

BUILD = textwrap.dedent('''
    import sys
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    assert 'mmhire' not in sys.modules
    cfg = Config.fromfile(sys.argv[1])  # imports mmhire via custom_imports
    init_default_scope(cfg.default_scope)
    from {scope}.registry import MODELS
    import torch
    for model in cfg.models:
        backbone = MODELS.build(model)
        assert type(backbone).__module__.startswith('mmhire.'), type(backbone)
        outs = backbone(torch.randn(2, 3, 64, 64))
        print(model['type'], [tuple(o.shape) for o in outs])
''')


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_every_backbone_builds_from_a_config_through_each_registry(
        tmp_path, scope):
    models = [dict(type=cls.__name__, arch=CASES[cls.__name__].arch,
                   out_indices=(1, 2, 3), frozen_stages=1)
              for cls in BACKBONES]
    config = tmp_path / 'config.py'
    config.write_text(textwrap.dedent(f'''
        custom_imports = dict(imports=['mmhire'], allow_failed_imports=False)
        default_scope = '{scope}'
        models = {models}
    '''))
    result = subprocess.run(
        [sys.executable, '-c', BUILD.format(scope=scope), str(config)],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    for cls in BACKBONES:
        model = cls(CASES[cls.__name__].arch, out_indices=(1, 2, 3))
        shapes = [(2, c, s, s) for c, s in zip(
            model.out_channels, model.map_sizes(64)[1:])]
        assert f'{cls.__name__} {shapes}' in result.stdout
