"""Bags from other recorders: what ``ros2 bag``, rosbags' own writer and raw MCAP writers put in
a recording, and what breaks on the way (service events, foreign serializations, split files,
a missing metadata.yaml, truncated and damaged files).

Writers used: the bags under ``resources/rosbag2`` were written by the real ``ros2 bag``
recorder (the rosbag2 project's test resources); the rest are written here with the ``mcap``
library (chunk compression, service-event and JSON channels) and with ``rosbags``' Writer
(a custom message type), never with this package's recorder.
"""
from pathlib import Path

import numpy as np
import pytest
import yaml
from mcap.writer import CompressionType, Writer
from rosbags.rosbag2 import StoragePlugin
from rosbags.rosbag2 import Writer as RosbagsWriter
from rosbags.typesys import get_types_from_msg

from vla_embedding_ros.data.dataset import JSONLDataset
from vla_embedding_ros.data.recordings.bag_import import (
    ImportConfig,
    convert_bags,
    format_summary,
)
from vla_embedding_ros.data.recordings.bag_reader import BagError, BagReader
from vla_embedding_ros.data.recordings.bag_record import typestore
from vla_embedding_ros.data.recordings.bag_to_dataset import main as bag_to_dataset

RESOURCES = Path(__file__).parent / 'resources' / 'rosbag2'
CAMERA, INSTRUCTION, ACTION = '/front/image_raw', '/instruction', '/policy/action'
SERVICE_EVENT = '/set_mode/_service_event'
STORE = typestore()
IMAGE, STRING = 'sensor_msgs/msg/Image', 'std_msgs/msg/String'


def frame(value: int) -> np.ndarray:
    img = np.zeros((6, 8, 3), np.uint8)
    img[..., 0] = value
    img[..., 1] = np.arange(8, dtype=np.uint8)[None] * 20
    return img


def image_cdr(value: int, t_ns: int) -> bytes:
    Header = STORE.types['std_msgs/msg/Header']
    Time = STORE.types['builtin_interfaces/msg/Time']
    Image = STORE.types[IMAGE]
    rgb = frame(value)
    msg = Image(header=Header(stamp=Time(sec=t_ns // 10**9, nanosec=t_ns % 10**9),
                              frame_id='front'),
                height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8', is_bigendian=0,
                step=rgb.shape[1] * 3, data=rgb.ravel())
    return bytes(STORE.serialize_cdr(msg, IMAGE))


def string_cdr(text: str) -> bytes:
    return bytes(STORE.serialize_cdr(STORE.types[STRING](data=text), STRING))


# One episode: an instruction, then three (frame, action) pairs 0.1 s apart.
EPISODE = [(0.50, INSTRUCTION, 'pick up the red block')] + [
    item for k in range(3) for item in (
        (1.0 + 0.1 * k, CAMERA, 10 + k), (1.02 + 0.1 * k, ACTION, f'move_{k}'))]


def ns(t: float) -> int:
    return int(round(t * 1e9))


def write_mcap(path: Path, compression: CompressionType, items=EPISODE,
               service_events: bool = True) -> Path:
    """A ROS 2 MCAP written with the ``mcap`` library (as Foxglove and rosbag2's plugin do),
    with a service-event channel and a JSON channel next to the image topics."""
    with open(path, 'wb') as f:
        w = Writer(f, compression=compression, chunk_size=256)
        w.start(profile='ros2', library='test')
        channels = {}
        for topic, msgtype in [(CAMERA, IMAGE), (INSTRUCTION, STRING), (ACTION, STRING)]:
            schema = w.register_schema(msgtype, 'ros2msg',
                                       STORE.generate_msgdef(msgtype, ros_version=2)[0].encode())
            channels[topic] = w.register_channel(topic, 'cdr', schema)
        if service_events:
            # What Jazzy's recorder writes for `--services`: a srv-style definition that rosbags
            # cannot parse, and a diagnostics channel in JSON (not CDR).
            schema = w.register_schema('acme_srvs/srv/SetMode_Event', 'ros2msg',
                                       b'string mode\n---\nbool ok\n')
            event = w.register_channel(SERVICE_EVENT, 'cdr', schema)
            w.add_message(event, ns(0.7), b'\x00\x01\x00\x00' + b'\x00' * 12, ns(0.7))
            json_schema = w.register_schema('acme/Status', 'jsonschema', b'{}')
            status = w.register_channel('/status_json', 'json', json_schema)
            w.add_message(status, ns(0.8), b'{"ok": true}', ns(0.8))
        for t, topic, payload in items:
            data = image_cdr(payload, ns(t)) if topic == CAMERA else string_cdr(payload)
            w.add_message(channels[topic], ns(t), data, ns(t))
        w.finish()
    return path


def config(**kw) -> ImportConfig:
    return ImportConfig(**{'image_topics': [CAMERA], 'instruction_topic': INSTRUCTION,
                           'action_topic': ACTION, 'tolerance': 0.05, **kw})


def assert_episode(out: Path, summary: dict) -> None:
    assert summary['written'] == 3 and summary['skipped_total'] == 0
    ds = JSONLDataset(out)
    got = [ds[i] for i in range(len(ds))]
    assert [g['action'] for g in got] == ['move_0', 'move_1', 'move_2']
    assert {g['instruction'] for g in got} == {'pick up the red block'}
    for k, g in enumerate(got):
        np.testing.assert_array_equal(g['images'][0], frame(10 + k))


@pytest.mark.parametrize('compression', [CompressionType.ZSTD, CompressionType.LZ4,
                                         CompressionType.NONE])
def test_raw_mcap_with_service_events_and_json_channels(tmp_path, compression):
    bag = write_mcap(tmp_path / 'raw.mcap', compression)
    summary = convert_bags([bag], tmp_path / 'ds', config(), progress=False)
    assert_episode(tmp_path / 'ds', summary)
    unreadable = summary['unreadable_topics']
    assert set(unreadable) == {SERVICE_EVENT, '/status_json'}
    assert 'acme_srvs/srv/SetMode_Event does not parse' in unreadable[SERVICE_EVENT]
    assert "'json'" in unreadable['/status_json']
    text = format_summary(summary)
    assert '2 other topic(s) in the bag(s) not read, 2 of them unreadable here:' in text
    assert f'  {SERVICE_EVENT}: definition of' in text


def test_asked_for_topic_that_cannot_be_read_is_one_clear_line(tmp_path, capsys):
    bag = write_mcap(tmp_path / 'raw.mcap', CompressionType.ZSTD)
    for topic, expected in [(SERVICE_EVENT, 'the definition of acme_srvs/srv/SetMode_Event in the '
                                            'bag does not parse'),
                            ('/status_json', "serialization format 'json' is not supported")]:
        code = bag_to_dataset([str(bag), '--out', str(tmp_path / 'ds'), '--quiet',
                               '--image-topic', CAMERA, '--instruction-topic', INSTRUCTION,
                               '--action-topic', topic])
        err = capsys.readouterr().err
        assert code == 2 and err.count('\n') == 1 and 'Traceback' not in err
        assert f'{bag}: topic {topic}: {expected}' in err
    assert not (tmp_path / 'ds').exists()


def test_rosbags_writer_with_custom_types_sqlite3_and_mcap(tmp_path):
    """rosbags' own Writer, a custom gripper type next to the standard ones."""
    store = typestore()
    custom = 'acme_msgs/msg/GripperState'
    store.register(get_types_from_msg('float32 width\nbool holding\nstring note\n', custom))
    Gripper = store.types[custom]
    for storage in (StoragePlugin.SQLITE3, StoragePlugin.MCAP):
        path = tmp_path / f'bag_{storage.name.lower()}'
        with RosbagsWriter(path, version=9, storage_plugin=storage) as w:
            conns = {topic: w.add_connection(topic, msgtype, typestore=store)
                     for topic, msgtype in [(CAMERA, IMAGE), (INSTRUCTION, STRING),
                                            (ACTION, STRING), ('/gripper', custom)]}
            for t, topic, payload in EPISODE:
                data = image_cdr(payload, ns(t)) if topic == CAMERA else string_cdr(payload)
                w.write(conns[topic], ns(t), data)
                gripper = Gripper(width=0.04, holding=False, note='open')
                w.write(conns['/gripper'], ns(t) + 1, store.serialize_cdr(gripper, custom))
        summary = convert_bags([path], tmp_path / f'ds_{storage.name}', config(), progress=False)
        assert_episode(tmp_path / f'ds_{storage.name}', summary)
        assert summary['other_topics'] == {'/gripper': custom}
        assert summary['unreadable_topics'] == {}


def test_split_files_without_metadata_are_read_in_order_with_a_note(tmp_path):
    """A recorder killed mid-run leaves its split files but no metadata.yaml."""
    bag = tmp_path / 'crashed'
    bag.mkdir()
    write_mcap(bag / 'crashed_0.mcap', CompressionType.ZSTD, EPISODE[:3])
    write_mcap(bag / 'crashed_1.mcap', CompressionType.ZSTD, EPISODE[3:], service_events=False)
    summary = convert_bags([bag], tmp_path / 'ds', config(), progress=False)
    assert_episode(tmp_path / 'ds', summary)
    assert summary['notes'] == [f'crashed: no metadata.yaml; read its 2 storage file(s) '
                                f'directly in name order (`ros2 bag reindex {bag}` restores it)']


def cut(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def test_damaged_inputs_each_give_one_line_and_exit_2(tmp_path, capsys):
    truncated = write_mcap(tmp_path / 'truncated.mcap', CompressionType.ZSTD)
    cut(truncated, 0.6)
    # Flipped bytes inside the second frame's pixels: the file opens, its chunk CRC fails.
    damaged = write_mcap(tmp_path / 'damaged.mcap', CompressionType.NONE)
    data = bytearray(damaged.read_bytes())
    pixels = data.index(frame(11).tobytes())
    data[pixels:pixels + 8] = bytes(8)
    damaged.write_bytes(bytes(data))
    not_a_bag = tmp_path / 'notes.db3'
    not_a_bag.write_bytes(b'these are my notes, not a database' * 10)
    empty_dir = tmp_path / 'empty_dir'
    empty_dir.mkdir()
    bad_metadata = tmp_path / 'bad_metadata'
    bad_metadata.mkdir()
    (bad_metadata / 'metadata.yaml').write_text('rosbag2_bagfile_information: [1, 2\n')
    ros1 = tmp_path / 'old.bag'
    ros1.write_bytes(b'#ROSBAG V2.0\n')
    cases = {
        truncated: 'truncated or not MCAP',
        damaged: 'reading stopped',
        not_a_bag: 'damaged or not a bag',
        empty_dir: 'no metadata.yaml and no .mcap/.db3 files',
        bad_metadata: 'metadata.yaml is unreadable',
        ros1: 'a ROS 1 bag; convert it first',
        tmp_path / 'missing': 'no such bag',
    }
    for bag, expected in cases.items():
        code = bag_to_dataset([str(bag), '--out', str(tmp_path / 'ds'), '--quiet',
                               '--image-topic', CAMERA, '--instruction-topic', INSTRUCTION,
                               '--action-topic', ACTION])
        err = capsys.readouterr().err
        assert (code, err.count('\n')) == (2, 1), (bag, err)
        assert 'Traceback' not in err and str(bag.name) in err and expected in err, err
    assert not (tmp_path / 'ds').exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.ds')]  # no temp left


# -- bags written by the real `ros2 bag` recorder ---------------------------------------------

def read_all(bag: Path, topics):
    with BagReader(bag, topics) as reader:
        messages = [(c.topic, reader.deserialize(raw, c.msgtype))
                    for c, _, raw in reader.messages()]
        return reader, messages


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_ros2_bag_with_service_events_reads_its_topics(storage):
    bag = RESOURCES / f'{storage}_topics_and_service_events'
    reader, messages = read_all(bag, ['/test_topic1', '/test_topic2'])
    assert {t for t, _ in messages} == {'/test_topic1', '/test_topic2'}
    assert all(m.string_value_default1 == 'Hello world!' for _, m in messages)
    events = {t for t in reader.other_topics if t.endswith('/_service_event')}
    assert events == {'/test_service1/_service_event', '/test_service2/_service_event'}
    if storage == 'mcap':  # sqlite3 stores no definitions for them: nothing to fail on
        assert set(reader.unreadable_topics) == events


def test_ros2_bag_in_unknown_serialization():
    bag = RESOURCES / 'mcap_wrong_serialization'
    with pytest.raises(BagError, match=r"topic /test_topic: serialization format "
                                       r"'wrong_format' is not supported"):
        read_all(bag, ['/test_topic'])
    reader, messages = read_all(bag, ['/not_recorded'])
    assert messages == [] and set(reader.unreadable_topics) == {'/test_topic', '/array_topic'}


def test_ros2_split_bag_reads_every_file():
    bag = RESOURCES / 'mcap_split'
    info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    counts = {t['topic_metadata']['name']: t['message_count']
              for t in info['topics_with_message_count']}
    assert len(info['relative_file_paths']) == 5
    for topic in ('AAA', 'HHH'):
        _, messages = read_all(bag, [topic])
        assert len(messages) == counts[topic] > 0


def test_ros2_split_bag_without_metadata():
    bag = RESOURCES / 'mcap_split_without_metadata'
    reader, messages = read_all(bag, [])
    assert reader.notes and 'ros2 bag reindex' in reader.notes[0] and '3 storage file' in \
        reader.notes[0]
    topic = sorted(reader.other_topics)[0]
    _, messages = read_all(bag, [topic])
    assert len(messages) > 0
