"""Action library YAML: round trip, validation messages naming entry and field, atomic write."""
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from vla_embedding_ros.actions.library import Action, ActionLibrary, Twist, load_library

REPO = Path(__file__).resolve().parents[1]
PARAMS = ['pick', 'push_left', 'x', 'y']


def _doc(**override):
    doc = {
        'version': 1,
        'parameter_names': list(PARAMS),
        'actions': [
            {'name': 'pick_r0_c0', 'description': 'pick up the object in row 0, column 0',
             'params': [1, 0, 0.125, 0.125]},
            {'name': 'push_left_r1_c2', 'description': 'push the object left',
             'params': [0, 1, 0.1, 0.375],
             'twist': {'linear': [0.1, 0, 0], 'angular': [0, 0, -0.5]}},
        ],
    }
    doc.update(override)
    return doc


def _write(tmp_path, doc, name='actions.yaml'):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_round_trip_keeps_every_field(tmp_path):
    lib = load_library(_write(tmp_path, _doc()))
    assert lib.names == ['pick_r0_c0', 'push_left_r1_c2']
    assert lib.parameter_names == PARAMS and lib.param_dim == 4 and len(lib) == 2
    assert lib.params().dtype == np.float32 and lib.params().shape == (2, 4)
    assert lib.index('push_left_r1_c2') == 1
    assert lib[1].twist == Twist((0.1, 0.0, 0.0), (0.0, 0.0, -0.5))
    assert lib[0].twist is None and lib.has_twist

    out = tmp_path / 'sub' / 'copy.yaml'
    out.parent.mkdir()
    lib.to_yaml(out)
    text = out.read_text()
    assert '0.1' in text and '0.10000000149' not in text  # float32 written in shortest form
    again = ActionLibrary.from_yaml(out)
    assert again.names == lib.names and again.descriptions == lib.descriptions
    np.testing.assert_array_equal(again.params(), lib.params())
    assert [a.twist for a in again] == [a.twist for a in lib]
    assert again.to_dict() == lib.to_dict()
    # Atomic write leaves no temp files behind and a readable mode.
    assert sorted(os.listdir(out.parent)) == ['copy.yaml']
    assert os.stat(out).st_mode & 0o044


def test_to_yaml_replaces_existing_file_atomically(tmp_path):
    lib = load_library(_write(tmp_path, _doc()))
    target = tmp_path / 'actions.yaml'
    inode_before = os.stat(target).st_ino
    smaller = ActionLibrary([lib[0]], lib.parameter_names)
    smaller.to_yaml(target)
    # os.replace swaps in a new file rather than truncating the one a reader may hold open.
    assert os.stat(target).st_ino != inode_before
    assert load_library(target).names == ['pick_r0_c0']


def test_index_of_unknown_name_is_a_clear_key_error(tmp_path):
    lib = load_library(_write(tmp_path, _doc()))
    with pytest.raises(KeyError, match="no action named 'nope'"):
        lib.index('nope')


def _bad_entry(**fields):
    doc = _doc()
    doc['actions'].append(fields)
    return doc


@pytest.mark.parametrize('doc, pattern', [
    (_bad_entry(description='no name', params=[0, 0, 0, 0]),
     r"actions\[2\]: missing field 'name'"),
    (_bad_entry(name='pick_r0_c0', params=[0, 0, 0, 0]),
     r"actions\[2\] 'pick_r0_c0': field 'name' duplicates actions\[0\]"),
    (_bad_entry(name='short', params=[0, 0, 0]),
     r"actions\[2\] 'short': field 'params' has 3 values, expected 4"),
    (_bad_entry(name='texty', params=[0, 'a', 0, 0]),
     r"actions\[2\] 'texty': field 'params' must hold numbers only; element 1"),
    (_bad_entry(name='booly', params=[True, 0, 0, 0]),
     r"actions\[2\] 'booly': field 'params' must hold numbers only; element 0"),
    (_bad_entry(name='nanny', params=[0, float('nan'), 0, 0]),
     r"actions\[2\] 'nanny': field 'params' element 1 is nan"),
    (_bad_entry(name='scalar', params=3),
     r"actions\[2\] 'scalar': field 'params' must be a list of 4 numbers"),
    (_bad_entry(name='noparams'),
     r"actions\[2\] 'noparams': missing field 'params'"),
    (_bad_entry(name='tw2', params=[0, 0, 0, 0], twist={'linear': [1, 0], 'angular': [0, 0, 0]}),
     r"actions\[2\] 'tw2': field 'twist.linear' has 2 values, expected 3"),
    (_bad_entry(name='twlist', params=[0, 0, 0, 0], twist=[1, 0, 0]),
     r"actions\[2\] 'twlist': field 'twist' must be a mapping"),
    (_bad_entry(name='twkey', params=[0, 0, 0, 0], twist={'linear': [0, 0, 0], 'spin': 1}),
     r"actions\[2\] 'twkey': field 'twist' has unknown key\(s\) \['spin'\]"),
    (_bad_entry(name='extra', params=[0, 0, 0, 0], colour='red'),
     r"actions\[2\] 'extra': unknown field\(s\) \['colour'\]"),
    (_bad_entry(name='desc', params=[0, 0, 0, 0], description=5),
     r"actions\[2\] 'desc': field 'description' must be a string"),
    (_doc(extra=1), r"unknown top-level key\(s\) \['extra'\]"),
    (_doc(version=2), r"field 'version' is 2"),
    (_doc(actions=[]), r"field 'actions' must be a non-empty list"),
    (_doc(parameter_names=['a', 'a', 'b', 'c']), r"field 'parameter_names' repeats 'a'"),
])
def test_validation_names_entry_and_field(tmp_path, doc, pattern):
    path = _write(tmp_path, doc)
    with pytest.raises(ValueError, match=pattern) as info:
        load_library(path)
    assert str(path) in str(info.value)  # the file is named too


def test_missing_parameter_names_and_bad_yaml(tmp_path):
    doc = _doc()
    del doc['parameter_names']
    with pytest.raises(ValueError, match="missing field 'parameter_names'"):
        load_library(_write(tmp_path, doc))
    bad = tmp_path / 'bad.yaml'
    bad.write_text('actions: [unclosed\n')
    with pytest.raises(ValueError, match='not valid YAML'):
        load_library(bad)


def test_constructor_validates_programmatic_actions():
    ok = Action('a', 'first', np.zeros(2))
    with pytest.raises(ValueError, match=r"actions\[1\] 'a': field 'name' duplicates"):
        ActionLibrary([ok, Action('a', 'again', np.zeros(2))], ['u', 'v'])
    with pytest.raises(ValueError, match=r"actions\[1\] 'b': field 'params' has 3 values"):
        ActionLibrary([ok, Action('b', '', np.zeros(3))], ['u', 'v'])
    with pytest.raises(ValueError, match=r"actions\[1\] 'c': field 'params' must be finite"):
        ActionLibrary([ok, Action('c', '', np.array([0, np.inf]))], ['u', 'v'])
    with pytest.raises(ValueError, match=r"actions\[0\] 'd': field 'twist.angular' element 2"):
        ActionLibrary([Action('d', '', np.zeros(2), Twist((0, 0, 0), (0, 0, np.nan)))],
                      ['u', 'v'])


def test_shipped_tabletop_library_loads():
    lib = load_library(REPO / 'config' / 'tabletop_actions.yaml')
    assert len(lib) == 80
    assert lib.parameter_names[:5] == ['pick', 'push_left', 'push_right', 'push_forward',
                                       'push_back']
    assert all(a.description for a in lib)
    # Every action has a distinct parameter vector, or the selector could not tell them apart.
    assert len({tuple(p) for p in lib.params().tolist()}) == len(lib)
