"""``vla-eval --task libero`` on real LIBERO scenes: the expert over official initial states,
a model's sampled decisions through the same episodes, and one-line refusals."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip('libero.libero', reason='LIBERO not installed (requirements-libero.txt)')

from support.models import make_tiny_bert, tiny_vla_config  # noqa: E402
from vla_embedding_ros.model import VLAModel  # noqa: E402
from vla_embedding_ros.training.evaluate import main  # noqa: E402

LIBRARY = Path(__file__).resolve().parents[1] / 'config' / 'libero_actions.yaml'


def test_the_expert_over_official_states_writes_a_per_task_report(tmp_path, capsys):
    report = tmp_path / 'expert.json'
    sheet = tmp_path / 'sheet.png'
    code = main(['--task', 'libero', '--suites', 'libero_object', '--tasks', '0', '--trials',
                 '1', '--policy', 'expert', '--image-size', '128', '--json', str(report),
                 '--sheet', str(sheet)])
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(report.read_text())
    suite = result['suites']['libero_object']
    assert suite['episodes'] == 1 and suite['success_rate'] == 1.0, suite
    assert result['grasp_attempts'] == 3
    assert [a['primitive'] for a in suite['tasks'][0]['episodes_detail'][0]['attempts']] == [
        'pick', 'place']
    [row] = suite['tasks']
    assert row['task'] == 0 and row['instruction'] in out
    assert result['versions'] and sheet.stat().st_size > 0
    assert f'report: {report}' in out


def test_a_model_decides_through_the_same_episodes(tmp_path, capsys):
    model_dir = tmp_path / 'model'
    bert = make_tiny_bert(tmp_path / 'bert')
    VLAModel(tiny_vla_config(text_path=bert, param_dim=4)).save_pretrained(model_dir)
    shutil.copy(LIBRARY, model_dir / 'actions.yaml')
    report = tmp_path / 'model.json'
    code = main(['--task', 'libero', '--suites', 'libero_spatial', '--tasks', '1',
                 '--trials', '1', '--model', str(model_dir), '--device', 'cpu',
                 '--image-size', '128', '--sample-count', '256', '--sample-iterations', '2',
                 '--json', str(report)])
    assert code == 0, capsys.readouterr()
    written = json.loads(report.read_text())
    [episode] = written['suites']['libero_spatial']['tasks'][0]['episodes_detail']
    # An untrained model: whatever it chose was a point of the image, judged like any other;
    # the primitive is the one the episode asked for (--primitive given, the default).
    assert written['primitive'] == 'given'
    assert written['sampling'] == {'samples': 256, 'iterations': 2}
    pick = episode['points']['pick']
    assert 0 <= pick[0] <= 1 and 0 <= pick[1] <= 1, episode
    assert episode['failure'] != 'wrong_primitive', episode


@pytest.mark.parametrize('argv,says', [
    (['--suites', 'libero_nope', '--policy', 'expert'], 'libero_spatial'),
    (['--suites', 'libero_spatial'], '--model'),
    (['--policy', 'expert'], '--suites'),
    (['--suites', 'libero_spatial', '--policy', 'random', '--primitive', 'chosen'],
     '--primitive chosen'),
    (['--suites', 'libero_spatial', '--policy', 'random', '--grasp-attempts', '0'],
     '--grasp-attempts'),
    (['--suites', 'libero_spatial', '--policy', 'expert', '--sample-count', '4096'],
     '--sample-count is for a model'),
])
def test_mistakes_are_one_line_and_exit_2(argv, says, capsys):
    assert main(['--task', 'libero', *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1, err
