"""VLAConfig parsing/validation, resolve_device, and a cheap ROS-free package import."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from vla_embedding_ros.model import VLAConfig, resolve_device

REPO = Path(__file__).resolve().parents[1]


def test_round_trip_through_json():
    cfg = VLAConfig.from_dict({'embed_dim': 64, 'vision': {'conv': {'channels': [8, 16, 32]}},
                               'fusion': {'type': 'gated'}, 'action': {'param_dim': 3}})
    data = json.loads(json.dumps(cfg.to_dict()))
    again = VLAConfig.from_dict(data)
    assert again == cfg
    assert again.vision.conv.channels == (8, 16, 32)
    assert again.fusion.type == 'gated' and again.action.param_dim == 3


def test_shipped_training_yaml_model_section_parses():
    data = yaml.safe_load((REPO / 'config' / 'train_tabletop.yaml').read_text())
    cfg = VLAConfig.from_dict(data['model'])
    assert cfg.vision.type == 'conv' and cfg.fusion.type == 'transformer'


@pytest.mark.parametrize('data, field', [
    ({'embedding_dim': 3}, 'embedding_dim'),
    ({'vision': {'conv': {'stride': 4}}}, 'vision.conv.stride'),
    ({'fusion': {'typ': 'late'}}, 'fusion.typ'),
])
def test_unknown_options_are_rejected_by_name(data, field):
    with pytest.raises(ValueError, match=f'unknown option {field!r}'):
        VLAConfig.from_dict(data)


@pytest.mark.parametrize('data, field', [
    ({'embed_dim': 'big'}, 'embed_dim'),
    ({'fusion': {'type': 'concat'}}, 'fusion.type'),
    ({'text': {'pooling': 'max'}}, 'text.pooling'),
    ({'vision': {'type': 'hf'}}, 'vision.name_or_path'),
    ({'vision': {'conv': {'patch_size': 4}}}, 'vision.conv.patch_size'),
    ({'vision': {'image_mean': [0.5, 0.5]}}, 'vision.image_mean'),
    ({'fusion': {'d_model': 30, 'heads': 4}}, 'fusion.d_model'),
    ({'text': {'trainable': 'yes'}}, 'text.trainable'),
    ({'text': {'max_length': 64}}, 'text.max_length'),
    ({'vision': 3}, 'vision'),
])
def test_bad_values_name_the_field(data, field):
    with pytest.raises(ValueError, match=field.replace('.', r'\.')):
        VLAConfig.from_dict(data)


def test_resolve_device():
    assert resolve_device('cpu') == torch.device('cpu')
    expected = 'cuda' if torch.cuda.is_available() else 'cpu'
    assert resolve_device('auto').type == expected
    assert resolve_device().type == expected
    for bad in ('gpu', 'cuda:x', 'cuda:-1', ''):
        with pytest.raises(ValueError, match='device must be'):
            resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
@pytest.mark.parametrize('spec', ['cuda', 'cuda:0', 'CUDA:1'])
def test_cuda_request_without_cuda_is_a_clear_error(spec):
    with pytest.raises(RuntimeError, match='CUDA is not available'):
        resolve_device(spec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_index_out_of_range():
    n = torch.cuda.device_count()
    assert resolve_device('cuda:0') == torch.device('cuda', 0)
    with pytest.raises(RuntimeError, match='out of range|only'):
        resolve_device(f'cuda:{n}')


def test_import_is_ros_free_and_lazy_about_transformers():
    code = ('import sys, vla_embedding_ros.model as m; '
            'print(int("rclpy" in sys.modules), int("transformers" in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.split() == ['0', '0']
