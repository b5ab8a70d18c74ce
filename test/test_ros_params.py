"""The selector's parameter table, its validation rules and config/action_selector.yaml."""
from pathlib import Path

import pytest
import yaml

pytest.importorskip('rclpy')

from vla_embedding_ros.ros import selector_params as params  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / 'config'


def test_config_lists_every_declared_parameter_with_a_valid_value():
    doc = yaml.safe_load((CONFIG / 'action_selector.yaml').read_text())
    listed = doc['action_selector']['ros__parameters']
    table = params.parameter_table()
    assert set(listed) == set(table)
    for name, value in listed.items():
        default = table[name][0]
        assert type(value) is type(default), name
        assert params.check_value(name, value) == '', name
        if name != 'model_path':  # '' in the file = the computed default path
            assert value == default, name


def test_every_parameter_has_a_description_and_numeric_ranges():
    for name, (default, descriptor) in params.parameter_table().items():
        assert descriptor.description, name
        if isinstance(default, float):
            assert descriptor.floating_point_range, name
        if isinstance(default, int) and not isinstance(default, bool):
            assert descriptor.integer_range, name


@pytest.mark.parametrize('name,value,words', [
    ('max_rate_hz', -1.0, '>= 0'), ('min_confidence', 1.2, '[0, 1]'),
    ('mode', 'often', 'unknown mode'), ('top_k', 0, '>= 1'),
    ('device', 'gpu', 'cuda:N'), ('image_topics', [], 'non-empty'),
    ('image_topics', ['a', 'a'], 'duplicates'), ('image_transport', 'h264', 'unknown'),
    ('precision', 'fp8', 'unknown precision'), ('compile', 'jit', 'unknown compile mode'),
    ('torch_threads', -1, '>= 0'), ('backend', 'tensorrt', 'unknown backend'),
    ('onnx_text', 'int4', 'unknown onnx_text'), ('onnx_providers', 'cuda;cpu', 'comma-separated'),
])
def test_bad_values_have_reasons(name, value, words):
    assert words in params.check_value(name, value)


def test_state_gates():
    assert 'unconfigured' in params.check_change('model_path', '/m', 'active')
    assert params.check_change('model_path', '/m', 'unconfigured') == ''
    for name, value in (('compile', 'torch_compile'), ('precision', 'bf16'),
                        ('torch_threads', 1), ('backend', 'onnxruntime'),
                        ('onnx_providers', 'cuda, cpu')):
        assert 'unconfigured' in params.check_change(name, value, 'inactive')
        assert params.check_change(name, value, 'unconfigured') == ''
    assert 'not active' in params.check_change('image_topics', ['a'], 'active')
    assert params.check_change('image_topics', ['a'], 'inactive') == ''
    assert params.check_change('top_k', 3, 'active') == ''


def test_sim_config_matches_the_node():
    from vla_embedding_ros.ros.tabletop_sim_node import PARAMETERS

    doc = yaml.safe_load((CONFIG / 'tabletop_sim.yaml').read_text())
    listed = doc['tabletop_sim']['ros__parameters']
    assert set(listed) == set(PARAMETERS)
    for name, value in listed.items():
        assert value == PARAMETERS[name][0], name
