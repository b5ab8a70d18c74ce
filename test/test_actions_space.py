"""Continuous action spaces in the library YAML: layout, sampling, and errors naming the field."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from vla_embedding_ros.actions.library import ActionLibrary, load_library
from vla_embedding_ros.actions.space import ActionSpace

SPACE = {'choice': {'name': 'primitive', 'options': ['pick', 'push']},
         'continuous': [{'name': 'x', 'low': 0.0, 'high': 1.0},
                        {'name': 'y', 'low': -2.0, 'high': 2.0}]}


def test_a_library_may_declare_only_a_space(tmp_path):
    path = tmp_path / 'lib.yaml'
    path.write_text(yaml.safe_dump({'version': 1, 'space': SPACE}))
    library = load_library(path)
    assert len(library) == 0
    assert library.parameter_names == ['pick', 'push', 'x', 'y']
    assert library.params().shape == (0, 4)
    library.to_yaml(tmp_path / 'again.yaml')
    again = load_library(tmp_path / 'again.yaml')
    assert again.space == library.space


def test_fixed_actions_and_a_space_share_the_layout():
    library = ActionLibrary.from_dict({
        'version': 1, 'parameter_names': ['pick', 'push', 'x', 'y'], 'space': SPACE,
        'actions': [{'name': 'centre', 'params': [1, 0, 0.5, 0.0]}]})
    assert library.space.param_dim == library.param_dim == 4
    with pytest.raises(ValueError, match="'parameter_names'.*does not match the space"):
        ActionLibrary.from_dict({'version': 1, 'parameter_names': ['x', 'y', 'pick', 'push'],
                                 'space': SPACE, 'actions': []})


@pytest.mark.parametrize('change, message', [
    (lambda s: s['continuous'][0].update(low=2.0), r'continuous\[0\] \(x\): low 2 must be below'),
    (lambda s: s['continuous'][1].update(high=float('nan')), r'continuous\[1\] \(y\): high'),
    (lambda s: s['continuous'][1].update(high='far'), r'continuous\[1\] \(y\): high'),
    (lambda s: s.update(continuous=[], choice=None), 'space is empty'),
    (lambda s: s['choice'].update(options=[]), 'choice.options must be a non-empty'),
    (lambda s: s['continuous'].append({'name': 'pick', 'low': 0, 'high': 1}),
     r"\['pick'\] used twice"),
    (lambda s: s.update(twist={'linear.x': 'speed'}), "'speed' is not a continuous"),
    (lambda s: s.update(twist={'linear.w': 'x'}), "unknown field 'linear.w'"),
    (lambda s: s.update(extra=1), r"unknown key\(s\) \['extra'\]"),
])
def test_space_errors_name_the_field(change, message):
    space = yaml.safe_load(yaml.safe_dump(SPACE))
    change(space)
    with pytest.raises(ValueError, match=message):
        ActionLibrary.from_dict({'version': 1, 'space': space}, 'lib.yaml')


def test_uniform_samples_are_one_hot_and_inside_the_bounds_and_seeded():
    space = ActionSpace.from_dict(SPACE)
    a = space.sample_uniform(4000, torch.Generator().manual_seed(3))
    b = space.sample_uniform(4000, torch.Generator().manual_seed(3))
    c = space.sample_uniform(4000, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, :2].sum(1), torch.ones(4000))
    choice, values = space.split(a)
    assert set(choice.tolist()) == {0, 1}
    assert values[:, 0].min() >= 0 and values[:, 0].max() <= 1
    assert values[:, 1].min() >= -2 and values[:, 1].max() <= 2
    assert values[:, 1].std() > 1.0     # spread over the whole range, not a corner
    assert torch.equal(space.vectors(choice, values), a)


def test_check_vector_and_twist_mapping():
    space = ActionSpace.from_dict(dict(SPACE, twist={'linear.x': 'x', 'angular.z': 'y'}))
    assert space.describe([0, 1, 0.25, -1.5]) == 'push(x=0.250, y=-1.500)'
    assert space.twist_of([1, 0, 0.25, -1.5]) == ((0.25, 0.0, 0.0), (0.0, 0.0, -1.5))
    with pytest.raises(ValueError, match=r'y=3 is outside the space bounds \[-2, 2\]'):
        space.check_vector([1, 0, 0.5, 3.0])
    with pytest.raises(ValueError, match='has 3 values'):
        space.check_vector([1, 0, 0.5])
    with pytest.raises(ValueError, match='non-finite'):
        space.check_vector([1, 0, np.nan, 0])


def test_a_pinned_space_samples_only_its_option_and_the_same_values():
    space = ActionSpace.from_dict(SPACE)
    free = space.sample_uniform(500, torch.Generator().manual_seed(3))
    pinned = space.pinned_to('push').sample_uniform(500, torch.Generator().manual_seed(3))
    choice, values = space.split(pinned)
    assert set(choice.tolist()) == {1}
    # The same draws: a pinned search differs from a free one only in the option.
    assert torch.equal(values, space.split(free)[1])
    assert space.pinned_to('push').pinned_to(None) == space
    assert space.pinned_to('push').parameter_names == space.parameter_names
    assert 'pinned' not in str(space.pinned_to('push').to_dict())
    with pytest.raises(ValueError, match=r"cannot pin primitive to 'jump'.*\['pick', 'push'\]"):
        space.pinned_to('jump')
