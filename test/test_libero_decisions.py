"""``vla-eval --task libero --dataset DIR``: a model's decisions on a LIBERO-style data set
(written by the real writer, episodes named as vla-libero-dataset names them), split by scene
change, judged against each label's radius. No simulator runs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from support.models import make_tiny_bert, tiny_vla_config
from vla_embedding_ros.data.dataset import DatasetWriter
from vla_embedding_ros.model import VLAModel
from vla_embedding_ros.training.evaluate import main
from vla_embedding_ros.training.libero_decisions import CASES, scene_case

LIBRARY = Path(__file__).resolve().parents[1] / 'config' / 'libero_actions.yaml'


@pytest.mark.parametrize('episode,primitive,case', [
    ('libero_spatial/3/0', 'pick', CASES[0]),
    ('libero_spatial/3/0', 'place', CASES[0]),
    ('libero_spatial/3/1', 'pick', CASES[0]),     # a moved target moves for the place only
    ('libero_spatial/3/1', 'place', CASES[1]),
    ('libero_object/9/6', 'place', CASES[2]),     # k // 5 odd: a moved arrangement
    ('libero_object/9/7', 'place', CASES[3]),
    ('libero_object/9/7', 'pick', CASES[2]),
    ('libero_object/9/10', 'place', CASES[0]),    # k // 5 even again
])
def test_each_decision_falls_in_its_scene_change(episode, primitive, case):
    assert scene_case(episode, primitive) == (episode.split('/')[0], case)


@pytest.mark.parametrize('episode', ['7', 'libero_spatial/3', 'libero_spatial/a/1'])
def test_an_episode_not_named_by_vla_libero_dataset_is_refused(episode):
    with pytest.raises(ValueError, match='vla-libero-dataset'):
        scene_case(episode, 'pick')


def _dataset(root, radius: float) -> str:
    """Two tasks' worth of episodes k = 0, 1, 5, 6, 7: every case, picks and places."""
    rng = np.random.default_rng(0)
    with DatasetWriter(root, library=str(LIBRARY)) as writer:
        for suite in ('libero_spatial', 'libero_object'):
            for k in (0, 1, 5, 6, 7):
                for t, choice in enumerate(([1.0, 0.0], [0.0, 1.0])):
                    image = rng.integers(0, 255, (32, 32, 3), np.uint8)
                    writer.add(image, 'put the bowl on the plate',
                               action_vector=[*choice, *rng.uniform(0.2, 0.8, 2)],
                               episode=f'{suite}/0/{k}', timestamp=float(t),
                               labels={'radius': radius, 'others': []})
    return str(root)


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('decisions')
    model = folder / 'model'
    VLAModel(tiny_vla_config(text_path=make_tiny_bert(folder / 'bert'),
                             param_dim=4)).save_pretrained(model)
    shutil.copy(LIBRARY, model / 'actions.yaml')
    return str(model)


def _run(model_dir, dataset, report, *extra):
    return main(['--task', 'libero', '--dataset', dataset, '--model', model_dir,
                 '--device', 'cpu', '--sample-count', '64', '--sample-iterations', '1',
                 '--json', str(report), *extra])


def test_decisions_are_split_by_case_and_judged_by_the_label_radius(model_dir, tmp_path,
                                                                    capsys):
    # the same frames, seeds and model: every point of the unit square lies within a radius of
    # 2, none within 1e-6, so what counts as right is the label's radius and nothing else
    counts = {}
    for radius in (2.0, 1e-6):
        report = tmp_path / f'{radius}.json'
        assert _run(model_dir, _dataset(tmp_path / f'd{radius}', radius), report,
                    '--compare', f'again={model_dir}') == 0
        result = json.loads(report.read_text())
        assert set(result['models']) == {'model', 'again'}
        assert result['sampling'] == {'samples': 64, 'iterations': 1}
        counts[radius] = result['models']['model']
        # the compared model is the same one: the same decisions on the same seeds
        assert result['models']['again']['cells'] == counts[radius]['cells']
    wide, narrow = counts[2.0], counts[1e-6]
    assert wide['decisions'] == narrow['decisions'] == 20
    assert wide['right'] == 20 and narrow['right'] == 0
    cells = {(c['suite'], c['primitive'], c['case']): c['n'] for c in wide['cells']}
    # per suite: picks at k = 0, 1 (LIBERO's arrangement) and 5, 6, 7 (moved); places at
    # k = 0 / 1 (target kept / moved) and 6 / 5, 7 in the moved arrangement
    assert cells[('libero_spatial', 'pick', CASES[0])] == 2
    assert cells[('libero_spatial', 'pick', CASES[2])] == 3
    assert cells[('libero_object', 'place', CASES[0])] == 1
    assert cells[('libero_object', 'place', CASES[1])] == 1
    assert cells[('libero_object', 'place', CASES[2])] == 1
    assert cells[('libero_object', 'place', CASES[3])] == 2
    out = capsys.readouterr().out
    assert '| moved arrangement, target moved |' in out and '100.0% of 20 decisions' in out


def test_suites_and_tasks_narrow_the_decisions(model_dir, tmp_path):
    report = tmp_path / 'r.json'
    assert _run(model_dir, _dataset(tmp_path / 'd', 2.0), report,
                '--suites', 'libero_object') == 0
    cells = json.loads(report.read_text())['models']['model']['cells']
    assert {c['suite'] for c in cells} == {'libero_object'}
    assert _run(model_dir, str(tmp_path / 'd'), report, '--tasks', '3') == 2


@pytest.mark.parametrize('extra,says', [
    (['--policy', 'expert'], '--policy expert is for episodes'),
    (['--placement-seed', '1'], '--placement-seed is for episodes'),
    (['--trials', '3'], '--trials is for episodes'),
    (['--grasp-attempts', '1'], '--grasp-attempts is for episodes'),
    (['--primitive', 'chosen'], '--primitive chosen is for episodes'),
    (['--compare', 'nameonly'], '--compare wants NAME=DIR'),
])
def test_flags_only_episodes_honour_are_refused_by_name(model_dir, tmp_path, extra, says,
                                                        capsys):
    dataset = _dataset(tmp_path / 'd', 2.0)
    assert _run(model_dir, dataset, tmp_path / 'r.json', *extra) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1, err


def test_a_data_set_without_labels_is_refused(model_dir, tmp_path, capsys):
    with DatasetWriter(tmp_path / 'bare', library=str(LIBRARY)) as writer:
        writer.add(np.zeros((32, 32, 3), np.uint8), 'pick', action_vector=[1, 0, .5, .5],
                   episode='libero_spatial/0/0', timestamp=0.0)
    assert _run(model_dir, str(tmp_path / 'bare'), tmp_path / 'r.json') == 2
    assert 'labels.radius' in capsys.readouterr().err
