"""The small traps a new user met running the README's commands (issue 19, item 8): each is
now a clear message or the documented behaviour."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.training import config
from vla_embedding_ros.training import evaluate as vla_eval
from vla_embedding_ros.training.train import Trainer
from vla_embedding_ros.training.train import main as train_main

REPO = Path(__file__).resolve().parents[1]


def test_export_refuses_an_existing_folder_before_training(tmp_path, text_path, capsys):  # noqa: F811
    cfg = config(tmp_path, text_path, steps=2)
    config_file = tmp_path / 'cfg.yaml'
    config_file.write_text(yaml.safe_dump(cfg.to_dict()))
    target = tmp_path / 'models' / 'mine'
    target.mkdir(parents=True)
    (target / 'README.md').write_text('my model card')
    assert train_main(['--config', str(config_file), '--no-progress',
                       '--export', str(target)]) == 2
    assert '--overwrite' in capsys.readouterr().err
    assert not cfg.run_dir.exists()                       # refused before any training
    assert train_main(['--config', str(config_file), '--no-progress', '--export', str(target),
                       '--overwrite']) == 0
    assert (target / 'model.safetensors').is_file()
    assert (target / 'README.md').read_text() == 'my model card'


def test_a_run_that_is_all_warm_up_is_warned(tmp_path, text_path, caplog):  # noqa: F811
    cfg = config(tmp_path, text_path, steps=4)
    cfg.optim.warmup_steps = 4
    with caplog.at_level(logging.WARNING):
        Trainer(cfg)
    assert 'the whole run is warm-up' in caplog.text


def test_eval_plot_without_runs_and_unknown_splits_say_so(capsys):
    shipped = str(REPO / 'models' / 'tabletop')
    assert vla_eval.main(['--model', shipped, '--plot', 'curves.png']) == 2
    assert '--plot draws the training curves of --runs' in capsys.readouterr().err
    assert vla_eval.main(['--model', shipped, '--splits', 'nope']) == 2
    assert "unknown split(s) ['nope']" in capsys.readouterr().err


def test_train_variants_refuse_stale_runs_after_a_config_change(tmp_path, text_path):  # noqa: F811
    cfg = config(tmp_path, text_path, steps=2)
    config_file = tmp_path / 'cfg.yaml'
    config_file.write_text(yaml.safe_dump(cfg.to_dict()))
    dirs = vla_eval.train_variants(str(config_file), [], tmp_path / 'variants')
    assert sorted(dirs) == ['gated', 'late', 'transformer']
    with pytest.raises(ValueError, match='optim.lr is 0.003 there, 0.001 now'):
        vla_eval.train_variants(str(config_file), ['optim.lr=0.001'], tmp_path / 'variants')


def test_demo_refuses_an_unknown_split_with_its_choices(capsys):
    from vla_embedding_ros.ros.demo import _args
    with pytest.raises(SystemExit) as exit_info:
        _args(['--split', 'nope'])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_make_eval_has_a_recipe():
    run = subprocess.run(['make', '-n', 'eval'], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert 'vla_embedding_ros.training.evaluate --model models/tabletop' in run.stdout


def test_what_the_readme_writes_is_ignored_by_git():
    paths = ['recordings/teleop1/x.mcap', 'data/run1/index.jsonl', 'models/mine/config.json',
             'runs/tabletop/train.csv']
    run = subprocess.run(['git', 'check-ignore', *paths], cwd=REPO, capture_output=True,
                         text=True)
    assert sorted(run.stdout.split()) == sorted(paths)
    kept = subprocess.run(['git', 'check-ignore', 'models/tabletop/config.json'], cwd=REPO,
                          capture_output=True, text=True)
    assert kept.returncode == 1   # the shipped model is not ignored


def test_the_recorder_refuses_an_existing_folder_in_one_line(tmp_path):
    pytest.importorskip('rclpy')
    existing = tmp_path / 'recordings' / 'run1'
    existing.mkdir(parents=True)
    run = subprocess.run([sys.executable, '-m', 'vla_embedding_ros.ros.episode_recorder_node',
                          '--ros-args', '-p', f'output:={existing}'], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ))
    assert run.returncode == 2, run.stderr[-2000:]
    assert 'exists' in run.stderr and 'Traceback' not in run.stderr


def test_the_readme_records_teleop_or_expert_labels_not_the_selectors_own():
    """Training on /action_selector/selected_action teaches the model its own mistakes; the
    README's recording examples (item 9) label with another topic and say why."""
    readme = (REPO / 'README.md').read_text()
    commands = [part.split('```')[0] for marker in ('ros2 bag record', 'vla-episode-recorder')
                for part in readme.split(marker)[1:]]
    assert len(commands) >= 3
    assert not [c for c in commands if '/action_selector/selected_action' in c]
    assert 'its mistakes back' in readme
