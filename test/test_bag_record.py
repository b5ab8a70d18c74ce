"""Recording tabletop episodes to a bag and converting them back gives the generator's samples."""
import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from vla_embedding_ros.data.dataset import JSONLDataset
from vla_embedding_ros.data.recordings.bag_import import ImportConfig, convert_bags
from vla_embedding_ros.data.recordings.bag_record import (
    ACTION_TOPIC,
    IMAGE_TOPIC,
    INSTRUCTION_TOPIC,
    BagWriter,
    record_tabletop_episodes,
    typestore,
)
from vla_embedding_ros.data.recordings.bag_to_dataset import main as bag_to_dataset
from vla_embedding_ros.data.tabletop import TabletopConfig, TabletopGenerator

LIBRARY = 'config/tabletop_actions.yaml'


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


def test_typestore_matches_kilted_message_definitions():
    from rosbags.typesys import Stores, get_typestore

    kilted = get_typestore(Stores.ROS2_KILTED)
    for msgtype in ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage',
                    'std_msgs/msg/String', 'std_msgs/msg/Float32MultiArray',
                    'geometry_msgs/msg/Twist'):
        assert typestore().hash_rihs01(msgtype) == kilted.hash_rihs01(msgtype)


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_recorded_episodes_convert_back_to_the_generator_samples(tmp_path, storage):
    bag = tmp_path / 'bag'
    episodes = record_tabletop_episodes(bag, 5, seed=3, split='val', camera_size=48,
                                        frames_per_episode=1, storage=storage)
    with AnyReader([bag], default_typestore=typestore()) as reader:
        topics = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
        latched = [c for c in reader.connections if c.topic == INSTRUCTION_TOPIC][0]
    assert topics == {INSTRUCTION_TOPIC: ('std_msgs/msg/String', 5),
                      IMAGE_TOPIC: ('sensor_msgs/msg/Image', 10),  # + one frame after each act
                      ACTION_TOPIC: ('std_msgs/msg/String', 5)}
    assert latched.ext.offered_qos_profiles[0].durability.name == 'TRANSIENT_LOCAL'

    assert bag_to_dataset([str(bag), '--out', str(tmp_path / 'ds'), '--library', LIBRARY,
                           '--split', 'val', '--quiet']) == 0
    ds = JSONLDataset(tmp_path / 'ds')
    # With one frame per episode the generator stream is untouched: same images, exactly.
    expected = list(TabletopGenerator(TabletopConfig(image_size=48), 'val', 3).samples(5))
    assert len(ds) == 5
    for i, (episode, sample) in enumerate(zip(episodes, expected, strict=True)):
        item = ds[i]
        assert (item['instruction'], item['action']) == (sample.instruction, sample.action_name)
        assert (episode.instruction, episode.action) == (sample.instruction, sample.action_name)
        assert item['action_index'] == sample.action_index
        np.testing.assert_array_equal(item['images'][0], sample.image)
        assert item['episode'] == str(i)
        # The instruction opens the episode; the frame is one period (0.2 s) later and the
        # action 0.05 s after the frame.
        assert item['timestamp'] == pytest.approx(0.25, abs=1e-9)
        assert episode.action_time - episode.frame_stamps[0] == pytest.approx(0.05, abs=1e-6)


def test_compressed_frames_and_receive_stamps_pair_every_action(tmp_path):
    bag = tmp_path / 'bag'
    record_tabletop_episodes(bag, 4, seed=0, camera_size=48, frames_per_episode=3,
                             compressed=True)
    for stamp in ('header', 'receive'):
        cfg = ImportConfig(image_topics=[IMAGE_TOPIC + '/compressed'], stamp=stamp,
                           library=LIBRARY)
        summary = convert_bags([bag], tmp_path / stamp, cfg, progress=False)
        assert summary['written'] == 4 and summary['skipped_total'] == 0, summary
    item = JSONLDataset(tmp_path / 'header')[0]
    assert item['images'].shape == (1, 48, 48, 3) and item['action_index'] >= 0


def test_bag_writer_refuses_existing_dir_and_type_changes(tmp_path):
    (tmp_path / 'exists').mkdir()
    with pytest.raises(FileExistsError):
        BagWriter(tmp_path / 'exists')
    with BagWriter(tmp_path / 'bag') as bag:
        bag.write_string('/a', 'x', 1.0)
        with pytest.raises(ValueError, match='opened as std_msgs/msg/String'):
            bag.write_twist('/a', [0, 0, 0], [0, 0, 0], 2.0)
    assert bag.counts == {'/a': 1}


def test_several_bags_make_one_dataset_with_distinct_episodes(tmp_path):
    record_tabletop_episodes(tmp_path / 'a', 2, seed=0, camera_size=48)
    record_tabletop_episodes(tmp_path / 'b', 3, seed=1, camera_size=48)
    summary = convert_bags([tmp_path / 'a', tmp_path / 'b' / 'b.mcap'], tmp_path / 'ds',
                           ImportConfig(library=LIBRARY), progress=False)
    assert summary['written'] == 5 and summary['episodes'] == 5
    ds = JSONLDataset(tmp_path / 'ds')
    assert [ds[i]['episode'] for i in range(5)] == ['0', '1', '2', '3', '4']


def test_record_cli(tmp_path, capsys):
    from vla_embedding_ros.data.recordings.bag_record import main

    assert main(['--out', str(tmp_path / 'bag'), '--episodes', '2', '--camera-size', '48',
                 '--frames', '2', '--storage', 'sqlite3']) == 0
    assert 'recorded 2 train episodes' in capsys.readouterr().out
    assert list((tmp_path / 'bag').glob('*.db3'))
    with pytest.raises(SystemExit):
        main(['--out', str(tmp_path / 'bag')])  # exists
