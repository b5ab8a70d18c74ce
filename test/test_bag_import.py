"""rosbag2 -> dataset: pairing policy, skip reasons, image decoding, vector actions, the CLI.

Every bag is written in the test with the same library (rosbags) the importer reads with.
"""
import json

import cv2
import numpy as np
import pytest

from support.bags import ACTION, CAM_A, CAM_B, INSTR, frame, twist_bag
from vla_embedding_ros.actions.library import load_library
from vla_embedding_ros.data.dataset import JSONLDataset
from vla_embedding_ros.data.recordings.bag_actions import cluster_library, kmeans
from vla_embedding_ros.data.recordings.bag_images import (
    ImageDecodeError,
    decode_compressed,
    decode_raw,
    encode_raw,
)
from vla_embedding_ros.data.recordings.bag_import import ImportConfig, convert_bags
from vla_embedding_ros.data.recordings.bag_record import BagWriter
from vla_embedding_ros.data.recordings.bag_to_dataset import main as bag_to_dataset

NO_FRAME_A = f'no frame within tolerance for camera {CAM_A}'
NO_FRAME_B = f'no frame within tolerance for camera {CAM_B}'
A_STAMPS = {1.0: 'rgb8', 1.1: 'bgr8', 1.2: 'rgba8', 1.3: 'bgra8'}
B_STAMPS = [0.98, 1.08, 1.18]


def value_of(stamp: float) -> int:
    return int(round(stamp * 100))


@pytest.fixture(scope='module')
def two_camera_bag(tmp_path_factory):
    """Raw camera A (4 encodings, padded rows, stamps received in reverse order), PNG camera B
    (last frame corrupt), two instructions, six String actions."""
    path = tmp_path_factory.mktemp('bags') / 'two_cams'
    with BagWriter(path) as bag:
        bag.write_string(INSTR, 'pick up the red cube', 0.5, latched=True)
        bag.write_string(INSTR, 'push the blue ball left', 1.22, latched=True)
        # Receive times run backwards against the header stamps: out-of-order stamps.
        for k, (stamp, encoding) in enumerate(A_STAMPS.items()):
            bag.write_image(CAM_A, frame(value_of(stamp)), stamp, receive=1.33 - 0.01 * k,
                            encoding=encoding, row_padding=3 if k == 0 else 0)
        for stamp in B_STAMPS:
            bag.write_compressed_image(CAM_B, frame(value_of(stamp)), stamp, fmt='png')
        bag.write_compressed_image(CAM_B, None, 1.28, fmt='png', data=b'not a png at all')
        for t, name in [(0.3, 'pick'), (0.9, 'pick'), (1.05, 'pick'), (1.15, 'wait'),
                        (1.25, 'push'), (1.31, 'push')]:
            bag.write_string(ACTION, name, t)
    return path


def config(**kw) -> ImportConfig:
    base = dict(image_topics=[CAM_A, CAM_B], instruction_topic=INSTR, action_topic=ACTION)
    base.update(kw)
    return ImportConfig(**base)


def test_pairing_uses_newest_frame_at_or_before_and_counts_every_skip(two_camera_bag, tmp_path):
    out = tmp_path / 'ds'
    summary = convert_bags([two_camera_bag], out, config(tolerance=0.1), progress=False)
    assert summary['actions'] == 6 and summary['written'] == 3
    assert summary['skipped'] == {'no instruction yet': 1, NO_FRAME_A: 1,
                                  f'undecodable image on camera {CAM_B}': 1}
    assert summary['out_of_order_stamps'] == {CAM_A: 3}
    assert json.loads((out / 'summary.json').read_text()) == json.loads(json.dumps(summary))

    ds = JSONLDataset(out)
    items = [ds[i] for i in range(len(ds))]
    # t=1.05 pairs with A@1.0 (not the nearer-in-time-but-later 1.1) and B@0.98, etc.
    assert [(int(it['images'][0, 0, 0, 0]), int(it['images'][1, 0, 0, 0])) for it in items] == \
        [(100, 98), (110, 108), (120, 118)]
    for it in items:  # every encoding decoded to the same RGB picture
        np.testing.assert_array_equal(it['images'][0], frame(it['images'][0, 0, 0, 0]))
        np.testing.assert_array_equal(it['images'][1], frame(it['images'][1, 0, 0, 0]))
    assert [it['instruction'] for it in items] == ['pick up the red cube'] * 2 + \
        ['push the blue ball left']
    assert [it['action'] for it in items] == ['pick', 'wait', 'push']
    assert [it['episode'] for it in items] == ['0', '0', '1']
    np.testing.assert_allclose([it['timestamp'] for it in items], [0.55, 0.65, 0.03])
    # The library was built from the names seen: one-hot params, the name as description.
    library = load_library(out / 'actions.yaml')
    assert library.names == ['pick', 'push', 'wait']
    assert [a.description for a in library.actions] == library.names
    assert [it['action_index'] for it in items] == [0, 2, 1]


def test_tight_tolerance_skips_under_the_right_camera(two_camera_bag, tmp_path):
    summary = convert_bags([two_camera_bag], tmp_path / 'ds', config(tolerance=0.02),
                           progress=False)
    # 1.05/1.15/1.25: camera A's newest frame is 0.05 s old; 1.31: A@1.3 is fine, B@1.28 is not.
    assert summary['written'] == 0
    assert summary['skipped'] == {'no instruction yet': 1, NO_FRAME_A: 4, NO_FRAME_B: 1}
    assert summary['skipped_total'] == 6
    assert not (tmp_path / 'ds').exists()  # nothing to write: no empty dataset left behind
    assert any('0.050s old' in e for e in summary['skipped_examples'][NO_FRAME_A])


def test_receive_stamps_and_clock_warning(tmp_path):
    """Camera header stamps on another clock: header mode pairs nothing and warns;
    --stamp receive pairs by arrival."""
    path = tmp_path / 'clocks'
    with BagWriter(path) as bag:
        bag.write_string(INSTR, 'pick up the red cube', 1.0)
        for k in range(3):
            bag.write_image(CAM_A, frame(k), stamp=5000.0 + k, receive=2.0 + k)
            bag.write_string(ACTION, 'pick', 2.05 + k)
    cfg = dict(image_topics=[CAM_A], instruction_topic=INSTR, action_topic=ACTION)
    header = convert_bags([path], tmp_path / 'h', ImportConfig(**cfg), progress=False)
    assert header['skipped'] == {NO_FRAME_A: 3}
    assert header['warnings'] and '--stamp receive' in header['warnings'][0]
    receive = convert_bags([path], tmp_path / 'r', ImportConfig(**cfg, stamp='receive'),
                           progress=False)
    assert receive['written'] == 3 and not receive['warnings']
    assert [int(JSONLDataset(tmp_path / 'r')[i]['images'][0, 0, 0, 0]) for i in range(3)] == \
        [0, 1, 2]


def test_given_library_counts_unknown_names(two_camera_bag, tmp_path):
    lib = tmp_path / 'lib.yaml'
    lib.write_text('version: 1\nparameter_names: [a]\nactions:\n'
                   '  - {name: pick, description: pick it, params: [1]}\n'
                   '  - {name: push, description: push it, params: [2]}\n')
    summary = convert_bags([two_camera_bag], tmp_path / 'ds', config(library=str(lib)),
                           progress=False)
    # 'wait' is not in the library; payload problems are reported before pairing problems.
    assert summary['skipped'] == {'no instruction yet': 1, NO_FRAME_A: 1,
                                  'action name not in the library': 1,
                                  f'undecodable image on camera {CAM_B}': 1}
    assert load_library(tmp_path / 'ds' / 'actions.yaml').names == ['pick', 'push']
    with pytest.raises(ValueError, match='--cluster applies to vector'):
        convert_bags([two_camera_bag], tmp_path / 'x', config(cluster=2))


@pytest.mark.parametrize('stamped', [False, True])
def test_twist_actions_become_6_vectors_and_cluster_into_a_valid_library(tmp_path, stamped):
    truth = twist_bag(tmp_path / 'bag', stamped)
    summary = convert_bags([tmp_path / 'bag'], tmp_path / 'ds',
                           ImportConfig(image_topics=[CAM_A], instruction_topic=INSTR,
                                        action_topic=ACTION, cluster=2), progress=False)
    assert summary['written'] == 12 and summary['skipped_total'] == 0
    library = load_library(tmp_path / 'ds' / 'actions.yaml')
    assert len(library) == 2
    assert library.parameter_names == ['linear_x', 'linear_y', 'linear_z',
                                       'angular_x', 'angular_y', 'angular_z']
    ds = JSONLDataset(tmp_path / 'ds')
    items = [ds[i] for i in range(len(ds))]
    for item, (vector, _) in zip(items, truth, strict=True):
        np.testing.assert_array_equal(item['action_vector'], vector)  # raw vector kept
    # Each group got one name, the two groups different ones; the centres are the group means.
    names = {fwd: {it['action'] for it, (_, f) in zip(items, truth, strict=True) if f == fwd}
             for fwd in (True, False)}
    assert len(names[True]) == len(names[False]) == 1 and names[True] != names[False]
    fwd = library.actions[library.index(names[True].pop())]
    np.testing.assert_allclose(fwd.params, [0.5, 0, 0, 0, 0, 0], atol=0.02)
    assert fwd.twist is not None and fwd.twist.linear[0] == pytest.approx(0.5, abs=0.02)
    assert all(it['action_index'] >= 0 for it in items)


def test_float32_vectors_kept_raw_with_bad_ones_counted(tmp_path):
    path = tmp_path / 'bag'
    vectors = [[0.1, 0.2, 0.3], [1, 2, 3], [4, 5], [np.nan, 0, 0], [7, 8, 9]]
    with BagWriter(path) as bag:
        bag.write_string(INSTR, 'reach the cup', 0.1)
        for k, v in enumerate(vectors):
            bag.write_image(CAM_A, frame(k), 1.0 + k)
            bag.write_float32_array(ACTION, v, 1.01 + k)
    summary = convert_bags([path], tmp_path / 'ds',
                           ImportConfig(image_topics=[CAM_A], instruction_topic=INSTR,
                                        action_topic=ACTION), progress=False)
    assert summary['written'] == 3
    assert summary['skipped'] == {'action vector length differs': 1,
                                  'action vector not finite': 1}
    assert summary['library']['source'] is None
    assert not (tmp_path / 'ds' / 'actions.yaml').exists()
    ds = JSONLDataset(tmp_path / 'ds')
    np.testing.assert_allclose(np.stack([ds[i]['action_vector'] for i in range(3)]),
                               np.float32([[0.1, 0.2, 0.3], [1, 2, 3], [7, 8, 9]]))
    assert all(ds[i]['action'] == '' and ds[i]['action_index'] == -1 for i in range(3))
    with pytest.raises(ValueError, match='--library applies to action names'):
        convert_bags([path], tmp_path / 'x', ImportConfig(
            image_topics=[CAM_A], instruction_topic=INSTR, action_topic=ACTION, library='l'))


def test_kmeans_recovers_blobs_and_rejects_too_many_clusters():
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0], [10, 0], [0, 10]], float)
    x = np.concatenate([c + rng.normal(0, 0.3, (40, 2)) for c in centres])
    found, labels = kmeans(x, 3, seed=0)
    assert sorted(np.bincount(labels).tolist()) == [40, 40, 40]
    assert np.abs(np.sort(found, axis=0) - np.sort(centres, axis=0)).max() < 0.3
    with pytest.raises(ValueError, match='distinct'):
        kmeans(np.zeros((5, 2)), 2)
    actions, labels, sizes = cluster_library(x, 3, ['x', 'y'])
    assert [a['name'] for a in actions] == ['cluster_00', 'cluster_01', 'cluster_02']
    assert sizes.tolist() == [40, 40, 40] and np.bincount(labels).tolist() == [40, 40, 40]


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8'])
def test_decode_raw_honours_step(encoding):
    img = frame(7, 5, 6)
    enc, step, data = encode_raw(img, encoding, row_padding=5)
    assert step == 6 * (4 if 'a' in encoding[-2:] else 3) + 5
    np.testing.assert_array_equal(decode_raw(5, 6, enc, step, data), img)


def test_decode_mono_and_errors():
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5)
    padded = np.concatenate([gray, np.full((4, 3), 255, np.uint8)], axis=1).tobytes()
    out = decode_raw(4, 5, 'mono8', 8, padded)
    assert out.shape == (4, 5, 3) and (out == gray[..., None]).all()
    with pytest.raises(ImageDecodeError, match='unsupported encoding'):
        decode_raw(4, 5, '16UC1', 10, bytes(40))
    with pytest.raises(ImageDecodeError, match='needs'):
        decode_raw(4, 5, 'rgb8', 15, bytes(30))
    with pytest.raises(ImageDecodeError, match='not a JPEG or PNG image'):
        decode_compressed(b'garbage')
    ok, jpeg = cv2.imencode('.jpg', np.full((8, 8, 3), (10, 20, 200), np.uint8))  # BGR on disk
    assert np.abs(decode_compressed(jpeg.tobytes()).astype(int) - (200, 20, 10)).max() < 6


def test_cli(two_camera_bag, tmp_path, capsys):
    out = tmp_path / 'ds'
    args = [str(two_camera_bag), '--out', str(out), '--image-topic', CAM_A, '--image-topic',
            CAM_B, '--quiet']
    assert bag_to_dataset(args) == 0
    text = capsys.readouterr().out
    assert '3 samples written' in text and 'no instruction yet' in text
    assert bag_to_dataset(args) == 2  # exists
    assert bag_to_dataset([*args, '--overwrite', '--resize', '8x6']) == 0
    assert JSONLDataset(out)[0]['images'].shape == (2, 6, 8, 3)
    assert bag_to_dataset([*args, '--overwrite', '--tolerance', '0.001']) == 1
    assert bag_to_dataset([str(two_camera_bag), '--out', str(tmp_path / 'y'), '--quiet']) == 2
    err = capsys.readouterr().err
    assert 'topic /camera/image_raw: not in the bag; it has: ' in err
    assert f'{CAM_A} (sensor_msgs/msg/Image)' in err


def test_corrupt_messages_are_counted_not_fatal(tmp_path):
    path = tmp_path / 'bag'
    with BagWriter(path) as bag:
        bag.write_string(INSTR, 'pick up the red cube', 0.5)
        bag.write_raw(INSTR, 'std_msgs/msg/String', b'\x00\x01\x00\x00\xff', 0.9)
        for k in range(3):
            bag.write_image(CAM_A, frame(k), 1.0 + k)
            bag.write_string(ACTION, 'pick', 1.05 + k)
        bag.write_raw(CAM_A, 'sensor_msgs/msg/Image', b'\x00\x01\x00\x00\x07', 4.0)
        bag.write_string(ACTION, 'pick', 4.05)
        bag.write_raw(ACTION, 'std_msgs/msg/String', b'\x00\x01', 4.1)
    summary = convert_bags([path], tmp_path / 'ds', ImportConfig(
        image_topics=[CAM_A], instruction_topic=INSTR, action_topic=ACTION), progress=False)
    assert summary['written'] == 3
    assert summary['skipped'] == {f'undecodable image on camera {CAM_A}': 1,
                                  'action message does not deserialise': 1}
    assert summary['corrupt_messages'] == {INSTR: 1, CAM_A: 1, ACTION: 1}
