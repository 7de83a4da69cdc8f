"""The analysis tools: FLOPs of a backbone and of a whole config; the
benchmark's measurement in a fresh process."""
import json
import re

from conftest import ROOT, run_tool


def test_get_flops_of_an_arch_and_of_configs(tmp_path):
    arch = run_tool(['tools/analysis/get_flops.py', 'small', '--shape', '224',
                     '224'], cwd=tmp_path)
    assert "HireMLP 'small' backbone: 32.600M parameters, 4.239 GFLOPs" \
        in arch.stdout
    convmlp = run_tool(['tools/analysis/get_flops.py', 'large', '--backbone',
                        'ConvMLP'], cwd=tmp_path)
    assert "ConvMLP 'large' backbone: 41.958M parameters, 9.90" \
        in convmlp.stdout
    repmlp = run_tool(['tools/analysis/get_flops.py', 'T224', '--backbone',
                       'RepMLPNet', '--deploy'], cwd=tmp_path)
    assert "RepMLPNet 'T224' backbone: 37.818M parameters, 2.81" \
        in repmlp.stdout
    for config in ('detection/mask_rcnn_hire_tiny_1x.py',
                   'segmentation/upernet_repmlp_t256_80k_cityscapes.py'):
        result = run_tool(['tools/analysis/get_flops.py',
                           str(ROOT / 'configs' / config), '--shape', '256',
                           '320'], cwd=tmp_path)  # no dataset there
        whole, backbone = re.findall(r'([\d.]+)M parameters, ([\d.]+) GFLOPs',
                                     result.stdout)
        assert float(whole[1]) > float(backbone[1]) > 0
    deploy = run_tool(['tools/analysis/get_flops.py', 'small', '--deploy'],
                      cwd=tmp_path)
    assert 'deploy form' in deploy.stdout
    unknown = run_tool(['tools/analysis/get_flops.py', 'huge'], cwd=tmp_path,
                       check=False)
    assert unknown.returncode == 1 and 'neither an arch' in unknown.stderr


def test_benchmark_measures_a_model_in_a_fresh_process(tmp_path):
    def measure(network, arch, name, task):
        result = run_tool(['tools/analysis/benchmark.py', '--network',
                           network, '--arch', arch, '--runs', '2',
                           '--measure', name, '--task', task], cwd=tmp_path)
        return json.loads(result.stdout.splitlines()[-1])

    latency = measure('hire_mlp', 'tiny', 'Hire-MLP-Tiny mmhire deploy',
                      'latency')
    assert len(latency['times']) == 2 and latency['memory'] is None
    step = measure('hire_mlp', 'tiny', 'Hire-MLP-Tiny reference', 'train')
    assert len(step['times']) == 2 and step['memory'] > 10  # MiB
    convmlp = measure('conv_mlp', 'small', 'ConvMLP-Small reference',
                      'latency')
    assert len(convmlp['times']) == 2
    repmlp = measure('repmlp_net', 'T224', 'RepMLPNet-T224 reference deploy',
                     'latency')  # the authors' converted form, at 448x896
    assert len(repmlp['times']) == 2
