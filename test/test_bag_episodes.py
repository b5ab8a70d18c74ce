"""rosbag2 -> dataset episodes: the instruction text changing, and messages on an episode topic
(a simulator's ~/episode_result) ending episodes that share one instruction, as LIBERO's
consecutive runs of a task do. Every bag is written here with the real writer."""
from __future__ import annotations

import json

import pytest

from support.bags import ACTION, CAM_A, INSTR, frame
from vla_embedding_ros.data.dataset import JSONLDataset
from vla_embedding_ros.data.recordings.bag_import import ImportConfig, convert_bags
from vla_embedding_ros.data.recordings.bag_record import BagWriter
from vla_embedding_ros.data.recordings.bag_to_dataset import main as bag_to_dataset

RESULT = '/libero_sim/episode_result'


@pytest.fixture(scope='module')
def three_runs_bag(tmp_path_factory):
    """One latched instruction, then three runs of two actions each, an episode result after
    each run; a new instruction for a fourth run with no result before it."""
    path = tmp_path_factory.mktemp('bags') / 'runs'
    with BagWriter(path) as bag:
        bag.write_string(INSTR, 'put the bowl on the plate', 0.5, latched=True)
        for run, start in enumerate((1.0, 2.0, 3.0)):
            for dt in (0.0, 0.5):
                bag.write_image(CAM_A, frame(run * 10), start + dt - 0.02)
                bag.write_string(ACTION, 'pick', start + dt)
            bag.write_string(RESULT, json.dumps({'success': run != 1}), start + 0.8)
        bag.write_string(INSTR, 'put the cup on the plate', 4.0, latched=True)
        bag.write_image(CAM_A, frame(40), 4.18)
        bag.write_string(ACTION, 'pick', 4.2)
    return path


def _items(out):
    dataset = JSONLDataset(out)
    return [dataset[i] for i in range(len(dataset))]


def _config(**kw) -> ImportConfig:
    return ImportConfig(image_topics=[CAM_A], instruction_topic=INSTR, action_topic=ACTION,
                        **kw)


def test_episode_results_split_runs_that_share_an_instruction(three_runs_bag, tmp_path):
    summary = convert_bags([three_runs_bag], tmp_path / 'split', _config(episode_topic=RESULT),
                           progress=False)
    assert summary['written'] == 7 and summary['episodes'] == 4
    assert summary['topics']['episode'] == RESULT
    items = _items(tmp_path / 'split')
    assert [it['episode'] for it in items] == ['0', '0', '1', '1', '2', '2', '3']
    # from the episode's start: the instruction (0.5 s), then each result (1.8 s, 2.8 s),
    # then the new instruction (4.0 s)
    assert [round(it['timestamp'], 3) for it in items] == [0.5, 1.0, 0.2, 0.7, 0.2, 0.7, 0.2]


def test_without_an_episode_topic_only_the_instruction_splits(three_runs_bag, tmp_path):
    summary = convert_bags([three_runs_bag], tmp_path / 'merged', _config(), progress=False)
    assert summary['episodes'] == 2
    assert [it['episode'] for it in _items(tmp_path / 'merged')] == ['0'] * 6 + ['1']


def test_episodes_count_on_across_bags(three_runs_bag, tmp_path):
    convert_bags([three_runs_bag, three_runs_bag], tmp_path / 'two',
                 _config(episode_topic=RESULT), progress=False)
    assert [it['episode'] for it in _items(tmp_path / 'two')][7:] == [
        '4', '4', '5', '5', '6', '6', '7']


def test_the_cli_takes_the_episode_topic_and_names_a_missing_one(three_runs_bag, tmp_path,
                                                                 capsys):
    args = [str(three_runs_bag), '--image-topic', CAM_A, '--action-topic', ACTION, '--quiet']
    assert bag_to_dataset([*args, '--out', str(tmp_path / 'a'), '--episode-topic', RESULT]) == 0
    assert '(4 episodes' in capsys.readouterr().out
    assert bag_to_dataset([*args, '--out', str(tmp_path / 'b'), '--episode-topic',
                           '/tabletop_sim/episode_result']) == 2
    assert 'topic /tabletop_sim/episode_result: not in the bag' in capsys.readouterr().err
    assert bag_to_dataset([*args, '--out', str(tmp_path / 'c'), '--episode-topic', ACTION]) == 2
    assert 'must differ' in capsys.readouterr().err
