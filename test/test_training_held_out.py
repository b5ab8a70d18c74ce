"""Training on one's own data validates on held-out episodes of it (issue 30 item 5), and a
LeRobot dataset whose vectors no library action is near says so in numbers, naming the setting
that changes it (item 14)."""
import json
import logging

import numpy as np
import pytest
import yaml

from support.training import LIBRARY_PATH, config
from vla_embedding_ros.data.dataset import DatasetWriter
from vla_embedding_ros.data.recordings.lerobot_write import LeRobotWriter
from vla_embedding_ros.data.tabletop import ACTION_NAMES, build_action_library
from vla_embedding_ros.training import checkpoint as ckpt
from vla_embedding_ros.training.export import FACTS_FILE
from vla_embedding_ros.training.held_out import held_out_count
from vla_embedding_ros.training.train import Trainer
from vla_embedding_ros.training.train import main as train_main

EPISODES, PER_EPISODE = 10, 3


def write_jsonl(root):
    """EPISODES episodes of PER_EPISODE samples, each episode its own action."""
    rng = np.random.default_rng(0)
    with DatasetWriter(root, library=LIBRARY_PATH) as writer:
        for e in range(EPISODES):
            for t in range(PER_EPISODE):
                writer.add(rng.integers(0, 256, (48, 48, 3), np.uint8), 'pick up the red cube',
                           action=ACTION_NAMES[e], episode=f'ep{e}', timestamp=0.1 * t)
    return root


def jsonl_config(tmp_path, text_path, root, **data):
    cfg = config(tmp_path, text_path, steps=2, source='jsonl', path=str(root), **data)
    cfg.schedule.eval_every, cfg.schedule.eval_samples = 2, 50
    return cfg


def test_held_out_episodes_are_whole_seeded_and_scored(tmp_path, text_path, caplog):
    root = write_jsonl(tmp_path / 'data')
    with caplog.at_level(logging.INFO, logger='vla_train'):
        trainer = Trainer(jsonl_config(tmp_path, text_path, root))
    held = trainer.source.held_out_info
    # auto: a tenth of the 10 episodes, whole, never in a training batch
    assert held.setting == 'auto' and len(held.episodes) == 1 and held.samples == PER_EPISODE
    assert held.train_samples == (EPISODES - 1) * PER_EPISODE
    _, _, targets = trainer.source.next_batch(60)
    held_action = ACTION_NAMES.index(ACTION_NAMES[int(held.episodes[0][2:])])
    assert held_action not in set(targets.tolist())
    assert f'validating on 1 of 10 episodes of {root} (3 samples, seed 3' in caplog.text
    results = trainer.run(progress=False)
    assert results['held_out_episodes']['n'] == PER_EPISODE
    # In the run's config (as a comment: the file still loads) and the model's training.json.
    run_config = (trainer.run_dir / 'config.yaml').read_text()
    assert '# data.val_episodes auto: validating on 1 of 10 episodes' in run_config
    assert yaml.safe_load(run_config)['data']['val_episodes'] == 'auto'
    facts = json.loads((ckpt.latest_checkpoint(trainer.run_dir) / ckpt.MODEL_DIR /
                        FACTS_FILE).read_text())
    assert facts['validation']['held_out_episodes']['episodes'] == held.episodes
    assert facts['last_evaluation']['results']['held_out_episodes']['n'] == PER_EPISODE
    # The same episodes for the same seed; a count holds out that many.
    again = Trainer(jsonl_config(tmp_path / 'again', text_path, root))
    assert again.source.held_out_info.episodes == held.episodes
    three = Trainer(jsonl_config(tmp_path / 'three', text_path, root, val_episodes=3))
    assert len(three.source.held_out_info.episodes) == 3


@pytest.mark.parametrize('setting, total, expected', [
    ('auto', 10, 1), ('auto', 1, 0), (0.25, 10, 2), (0.01, 10, 1), (3, 10, 3), (0, 10, 0)])
def test_how_many_episodes_are_held_out(setting, total, expected):
    assert held_out_count(setting, total, 'jsonl', '') == expected


@pytest.mark.parametrize('setting, message', [
    (10, 'leaving none to train on'), (1.5, 'must be auto, 0, a fraction'),
    ('some', 'must be auto, 0, a fraction')])
def test_bad_val_episodes_are_refused_by_name(setting, message):
    with pytest.raises(ValueError, match=message):
        held_out_count(setting, 10, 'jsonl', '')


def test_val_episodes_is_refused_for_the_procedural_source(tmp_path, text_path):
    cfg = config(tmp_path, text_path, steps=1)
    cfg.data.val_episodes = 0.2
    with pytest.raises(ValueError, match='data.val_episodes is a setting of recorded datasets'):
        Trainer(cfg)


def write_lerobot_far_library(tmp_path):
    """A LeRobot folder written with the tabletop library, its library_index taken out (as
    LeRobot writes it: vectors only), and a library with the same names whose params are 3x
    the recorded vectors: every vector is far from every library action."""
    rng = np.random.default_rng(0)
    root = tmp_path / 'lerobot'
    with LeRobotWriter(root, library=build_action_library(), images='parquet', fps=10) as w:
        for i in range(6):
            w.add(rng.integers(0, 256, (48, 48, 3), np.uint8), 'pick up the red cube',
                  action=ACTION_NAMES[i], episode=i, timestamp=0.0)
    info = json.loads((root / 'meta/info.json').read_text())
    info['features'].pop('library_index')
    (root / 'meta/info.json').write_text(json.dumps(info))
    (root / 'meta/actions.yaml').unlink()
    library = yaml.safe_load(open(LIBRARY_PATH).read())
    for action in library['actions']:
        action['params'] = [3 * v for v in action['params']]
    far = tmp_path / 'far.yaml'
    far.write_text(yaml.safe_dump(library))
    return root, far


def test_vectors_far_from_the_library_name_the_distance_and_the_setting(tmp_path, text_path,
                                                                        capsys):
    root, far = write_lerobot_far_library(tmp_path)
    cfg = config(tmp_path, text_path, steps=1, source='lerobot', path=str(root),
                 library=str(far))
    file = tmp_path / 'cfg.yaml'
    file.write_text(yaml.safe_dump(cfg.to_dict()))
    assert train_main(['--config', str(file), '--no-progress']) == 2
    err = capsys.readouterr().err
    assert 'None (' not in err
    assert '6 of its 6 action vectors are farther from the nearest library action than ' \
           'max_action_distance' in err
    assert 'median' in err and 'raise data.max_action_distance (e.g.' in err
    # The number it suggests names them all, and the run trains.
    suggested = err.split('raise data.max_action_distance (e.g. ')[1].split(' ')[0]
    assert train_main(['--config', str(file), '--no-progress', '--set',
                       f'data.max_action_distance={suggested}']) == 0
