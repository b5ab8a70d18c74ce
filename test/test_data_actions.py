"""The tabletop action library and its YAML file in config/."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from vla_embedding_ros.data.tabletop.actions import (
    ACTION_NAMES,
    PARAMETER_NAMES,
    PRIMITIVES,
    action_index,
    action_name,
    build_action_library,
    library_yaml,
    parse_action_name,
    write_action_library,
)

CONFIG = Path(__file__).resolve().parents[1] / 'config' / 'tabletop_actions.yaml'


def test_library_has_80_unique_actions_with_consistent_params():
    library = build_action_library()
    names = [a['name'] for a in library]
    assert len(library) == 80 and len(set(names)) == 80 and tuple(names) == ACTION_NAMES
    for i, action in enumerate(library):
        primitive, row, col = parse_action_name(action['name'])
        params = np.array(action['params'])
        assert params.shape == (len(PARAMETER_NAMES),)
        assert params[:5].tolist() == [float(p == primitive) for p in PRIMITIVES]
        assert params[5:].tolist() == [(col + 0.5) / 4, (row + 0.5) / 4]
        assert f'row {row}, column {col}' in action['description']
        assert action_index(action['name']) == i
    assert len({tuple(a['params']) for a in library}) == 80
    assert len({a['description'] for a in library}) == 80


def test_names_and_descriptions_read_as_documented():
    by_name = {a['name']: a for a in build_action_library()}
    assert by_name['pick_r1_c2']['params'] == [1, 0, 0, 0, 0, 0.625, 0.375]
    assert by_name['push_left_r3_c0']['description'] == \
        'push the object in row 3, column 0 to the left'
    assert 'away from the camera' in by_name['push_forward_r0_c0']['description']
    assert 'towards the camera' in by_name['push_back_r0_c0']['description']
    assert action_name('push_back', 2, 3) == 'push_back_r2_c3'


@pytest.mark.parametrize('bad', ['pick_r4_c0', 'pick_r1', 'jump_r0_c0', 'push_left_r0_c-1', ''])
def test_malformed_names_are_rejected(bad):
    with pytest.raises(ValueError):
        parse_action_name(bad)


def test_bad_action_arguments_are_rejected():
    with pytest.raises(ValueError, match='primitive'):
        action_name('wave', 0, 0)
    with pytest.raises(ValueError, match='grid'):
        action_name('pick', 0, 4)
    with pytest.raises(ValueError, match='library'):
        action_index('pick_r9_c9')


def test_config_file_is_the_generated_library(tmp_path):
    fresh = write_action_library(tmp_path / 'actions.yaml')
    assert CONFIG.read_text() == fresh.read_text() == library_yaml(), \
        'config/tabletop_actions.yaml is stale: regenerate it with write_action_library'
    doc = yaml.safe_load(CONFIG.read_text())
    assert doc['version'] == 1 and doc['parameter_names'] == list(PARAMETER_NAMES)
    assert [a['name'] for a in doc['actions']] == list(ACTION_NAMES)
    assert all(set(a) == {'name', 'description', 'params'} for a in doc['actions'])


def test_write_is_atomic(tmp_path):
    path = tmp_path / 'lib' / 'actions.yaml'
    write_action_library(path)
    good = path.read_text()
    with pytest.raises(yaml.YAMLError):  # an unserialisable entry fails while dumping
        write_action_library(path, [{'name': 'x', 'description': 'y', 'params': [object()]}])
    assert path.read_text() == good
    assert sorted(p.name for p in path.parent.iterdir()) == ['actions.yaml']  # no temp left


def test_selection_loader_reads_the_file():
    library = pytest.importorskip('vla_embedding_ros.actions.library')
    if not hasattr(library, 'load_library'):
        pytest.skip('actions.library.load_library not there yet')
    lib = library.load_library(CONFIG)
    assert list(lib.names) == list(ACTION_NAMES)
    assert lib.params().shape == (80, 7)
