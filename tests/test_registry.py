import subprocess
import sys
import textwrap

import pytest

BUILD = textwrap.dedent('''
    import sys
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    assert 'mmhire' not in sys.modules
    cfg = Config.fromfile(sys.argv[1])  # imports mmhire via custom_imports
    init_default_scope(cfg.default_scope)
    from {scope}.registry import MODELS
    backbone = MODELS.build(cfg.model)
    assert type(backbone).__module__.startswith('mmhire.'), type(backbone)
    import torch
    outs = backbone(torch.randn(2, 3, 64, 64))
    print([tuple(o.shape) for o in outs])
''')


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
@pytest.mark.parametrize('backbone,arch,shapes', [
    ('HireMLP', 'tiny', '[(2, 128, 8, 8), (2, 320, 4, 4), (2, 512, 2, 2)]'),
    ('ConvMLP', 'small', '[(2, 128, 8, 8), (2, 256, 4, 4), (2, 512, 2, 2)]'),
    ('RepMLPNet', 'T224',
     '[(2, 128, 8, 8), (2, 256, 4, 4), (2, 512, 2, 2)]')])
def test_builds_from_a_config_through_each_registry(tmp_path, scope, backbone,
                                                    arch, shapes):
    config = tmp_path / 'config.py'
    config.write_text(textwrap.dedent(f'''
        custom_imports = dict(imports=['mmhire'], allow_failed_imports=False)
        default_scope = '{scope}'
        model = dict(type='{backbone}', arch='{arch}', out_indices=(1, 2, 3),
                     drop_path_rate=0.1, frozen_stages=1)
    '''))
    result = subprocess.run(
        [sys.executable, '-c', BUILD.format(scope=scope), str(config)],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert shapes in result.stdout
