"""LeRobotDataset v3.0: our writer's layout, reading it back, and reading a dataset laid out the
way LeRobot itself writes one (built here with pyarrow + PyAV, independently of our writer)."""
import json
import os
import pickle
import threading
from fractions import Fraction

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from vla_embedding_ros.data.dataset import BadSampleError
from vla_embedding_ros.data.recordings.lerobot_read import LeRobotV3Dataset
from vla_embedding_ros.data.recordings.lerobot_video import (
    VideoEncoder,
    VideoFrameError,
    VideoReader,
)
from vla_embedding_ros.data.recordings.lerobot_write import LeRobotWriter
from vla_embedding_ros.data.tabletop import (
    ACTION_INDEX,
    TabletopConfig,
    TabletopGenerator,
    build_action_library,
)

SIZE = 64
# Mean absolute error (0-255) of AV1 at CRF 30, yuv420p, on these 64x64 tabletop frames:
# measured 4.6 (chroma subsampling of sharp, saturated edges costs most of it).
VIDEO_MAE_BOUND = 12.0


def _samples(n, seed=0):
    return list(TabletopGenerator(TabletopConfig(image_size=SIZE), seed=seed).samples(n))


def _write(root, samples, per_episode=4, **kw):
    """Two cameras (the frame and its mirror); episodes of ``per_episode``; 10 Hz; the last
    episode is 'val'."""
    episodes = (len(samples) + per_episode - 1) // per_episode
    with LeRobotWriter(root, library=build_action_library(), **kw) as writer:
        for i, s in enumerate(samples):
            episode = i // per_episode
            writer.add([s.image, s.image[:, ::-1]], s.instruction, action=s.action_name,
                       episode=episode, timestamp=0.1 * (i % per_episode),
                       split='val' if episode == episodes - 1 else 'train')
    return root


def _mae(a, b):
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_video_layout_matches_lerobot_v3(tmp_path):
    samples = _samples(12)
    root = _write(tmp_path / 'ds', samples)
    info = json.loads((root / 'meta/info.json').read_text())
    assert info['codebase_version'] == 'v3.0' and info['fps'] == 10  # from the 0.1 s spacing
    assert (info['total_episodes'], info['total_frames'], info['total_tasks']) == (3, 12, 12)
    assert info['splits'] == {'train': '0:2', 'val': '2:3'}
    assert info['data_path'] == 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
    assert info['video_path'] == ('videos/{video_key}/chunk-{chunk_index:03d}/'
                                  'file-{file_index:03d}.mp4')
    assert info['chunks_size'] == 1000 and info['video_files_size_in_mb'] == 200
    features = info['features']
    assert features['action'] == {'dtype': 'float32', 'shape': [7], 'names': [
        'pick', 'push_left', 'push_right', 'push_forward', 'push_back', 'x', 'y']}
    cam = features['observation.images.cam0']
    assert cam['dtype'] == 'video' and cam['shape'] == [SIZE, SIZE, 3]
    assert cam['names'] == ['height', 'width', 'channels']
    assert cam['info']['video.codec'] == 'av1' and cam['info']['video.pix_fmt'] == 'yuv420p'
    assert cam['info']['video.fps'] == 10 and cam['info']['video.g'] == 2
    for key in ('timestamp', 'frame_index', 'episode_index', 'index', 'task_index'):
        assert features[key]['shape'] == [1]

    # Data parquet: the types LeRobot's loader casts to, no video columns.
    data = pq.read_table(root / 'data/chunk-000/file-000.parquet')
    schema = data.schema
    assert schema.field('action').type == pa.list_(pa.float32(), 7)   # fixed_size_list
    assert schema.field('timestamp').type == pa.float32()
    for key in ('frame_index', 'episode_index', 'index', 'task_index', 'library_index'):
        assert schema.field(key).type == pa.int64()
    assert schema.field('split').type == pa.string()
    assert not any(name.startswith('observation.images') for name in schema.names)
    hf = json.loads(schema.metadata[b'huggingface'])['info']['features']
    assert hf['action'] == {'feature': {'dtype': 'float32', '_type': 'Value'}, 'length': 7,
                            '_type': 'Sequence'}
    assert data['index'].to_pylist() == list(range(12))
    assert data['frame_index'].to_pylist() == [0, 1, 2, 3] * 3
    assert data['episode_index'].to_pylist() == [0] * 4 + [1] * 4 + [2] * 4

    # Tasks: the strings are the pandas index, so pd.read_parquet restores it.
    tasks = pq.read_table(root / 'meta/tasks.parquet')
    pandas_meta = json.loads(tasks.schema.metadata[b'pandas'])
    assert pandas_meta['index_columns'] == ['task']
    assert tasks['task'].to_pylist() == [s.instruction for s in samples]
    assert tasks['task_index'].to_pylist() == list(range(12))

    # Episodes: one row each, the columns LeRobot's loader reads, time ranges that tile the file.
    episodes = pq.read_table(root / 'meta/episodes/chunk-000/file-000.parquet')
    names = set(episodes.column_names)
    for column in ('episode_index', 'tasks', 'length', 'data/chunk_index', 'data/file_index',
                   'dataset_from_index', 'dataset_to_index', 'meta/episodes/chunk_index',
                   'meta/episodes/file_index', 'stats/action/mean',
                   'stats/observation.images.cam1/q99'):
        assert column in names, column
    rows = episodes.to_pylist()
    key = 'videos/observation.images.cam0/'
    assert [(r['dataset_from_index'], r['dataset_to_index']) for r in rows] == [
        (0, 4), (4, 8), (8, 12)]
    assert [r[key + 'from_timestamp'] for r in rows] == pytest.approx([0.0, 0.4, 0.8])
    assert [r[key + 'to_timestamp'] for r in rows] == pytest.approx([0.4, 0.8, 1.2])
    assert rows[1]['tasks'] == [s.instruction for s in samples[4:8]]

    # Stats in LeRobot's shapes; image stats per channel in [0, 1], exact for small frames.
    stats = json.loads((root / 'meta/stats.json').read_text())
    image = stats['observation.images.cam0']
    assert np.array(image['mean']).shape == (3, 1, 1) and image['count'] == [12]
    frames = np.stack([s.image for s in samples]) / 255.0
    assert np.ravel(image['mean']) == pytest.approx(frames.mean((0, 1, 2)))
    assert np.ravel(image['max']) == pytest.approx(frames.max((0, 1, 2)))
    actions = np.array([data['action'].to_pylist()])[0]
    assert stats['action']['mean'] == pytest.approx(actions.mean(0))
    assert set(stats['action']) == {'min', 'max', 'mean', 'std', 'count',
                                    'q01', 'q10', 'q50', 'q90', 'q99'}
    assert stats['timestamp']['max'] == pytest.approx([0.3])


def test_video_round_trip_and_loader(tmp_path):
    samples = _samples(12)
    root = _write(tmp_path / 'ds', samples)
    ds = LeRobotV3Dataset(root)
    assert len(ds) == 12 and ds.action_mapping == 'library_index'
    errors = []
    for i, (item, s) in enumerate(zip(ds, samples, strict=True)):
        assert item['images'].shape == (2, SIZE, SIZE, 3) and item['images'].dtype == np.uint8
        assert item['instruction'] == s.instruction and item['action'] == s.action_name
        assert item['action_index'] == ACTION_INDEX[s.action_name]
        assert item['episode'] == str(i // 4) and item['timestamp'] == pytest.approx(0.1 * (i % 4))
        assert item['action_vector'].dtype == np.float32 and item['action_vector'].shape == (7,)
        errors += [_mae(item['images'][0], s.image), _mae(item['images'][1], s.image[:, ::-1])]
    assert max(errors) < VIDEO_MAE_BOUND, errors
    # The training source counts unknown actions from records[i]['action'].
    assert [r['action'] for r in ds.records] == [s.action_name for s in samples]
    assert len(LeRobotV3Dataset(root, split='val')) == 4
    only = LeRobotV3Dataset(root, camera_keys=['cam1'])
    assert only[5]['images'].shape == (1, SIZE, SIZE, 3)
    # Backwards, random order, after pickling (DataLoader workers): same frames.
    copy = pickle.loads(pickle.dumps(ds))
    for i in (11, 0, 7, 6, 3):
        assert np.array_equal(copy[i]['images'], ds[i]['images'])
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    batches = list(loader)
    assert batches[0]['images'].shape == (4, 2, SIZE, SIZE, 3)
    assert torch.cat([b['action_index'] for b in batches]).tolist() == [
        ACTION_INDEX[s.action_name] for s in samples]


def test_parquet_images_are_lossless(tmp_path):
    samples = _samples(6, seed=1)
    root = tmp_path / 'ds'
    with LeRobotWriter(root, library=build_action_library(), images='parquet', fps=15,
                       camera_keys=['front', 'wrist']) as writer:
        for i, s in enumerate(samples):
            writer.add([s.image[:, :, ::-1], s.image], s.instruction,
                       action_vector=[0, 0, 1, 0, 0, 0.5, 0.25], episode='ep' + str(i // 3),
                       timestamp=i / 15, color='bgr')
    info = json.loads((root / 'meta/info.json').read_text())
    assert info['fps'] == 15 and info['video_path'] is None and 'split' not in info['features']
    front = info['features']['observation.images.front']
    assert front['dtype'] == 'image' and front['shape'] == [SIZE, SIZE, 3]
    assert not (root / 'videos').exists()
    schema = pq.read_schema(root / 'data/chunk-000/file-000.parquet')
    assert schema.field('observation.images.front').type == pa.struct(
        [('bytes', pa.binary()), ('path', pa.string())])
    ds = LeRobotV3Dataset(root)
    for item, s in zip(ds, samples, strict=True):
        # the first camera was given as BGR; both come back RGB, bit for bit
        assert np.array_equal(item['images'][0], s.image)
        assert np.array_equal(item['images'][1][:, :, ::-1], s.image)
        # a vector without a name: no library index, no name
        assert item['action'] == '' and item['action_index'] == -1
        assert item['action_vector'].tolist() == [0, 0, 1, 0, 0, 0.5, 0.25]
    assert [ds[0]['episode'], ds[5]['episode']] == ['ep0', 'ep1']
    assert ds.records[0]['action'] is None


def test_video_reader_picks_the_nearest_frame_within_tolerance(tmp_path):
    """Frames 0.1 s and 0.1003 s: a time 50 us after the first is that frame, whatever was
    decoded before; one 1 ms away from both is no frame."""
    path = tmp_path / 'v.mp4'
    grey = [np.full((16, 16, 3), v, np.uint8) for v in (0, 120, 250)]
    encoder = VideoEncoder(path, 16, 16, 90_000, 30)
    for frame, pts in zip(grey, (0, 9000, 9027), strict=True):
        encoder.write(frame, pts)
    encoder.close()

    def level(reader, seconds):
        return int(reader.frame_at(seconds, 1e-4).mean().round(-1))

    reader = VideoReader(path)
    assert [level(reader, t) for t in (0.0, 0.1, 0.10005, 0.1003)] == [0, 120, 120, 250]
    fresh = VideoReader(path)
    assert [level(fresh, t) for t in (0.10005, 0.0, 0.1003, 0.10005)] == [120, 0, 250, 120]
    with pytest.raises(VideoFrameError, match=r'v\.mp4: no frame within 0\.0001s of t=0\.05'):
        reader.frame_at(0.05, 1e-4)
    with pytest.raises(VideoFrameError, match='the video ends'):
        reader.frame_at(0.2, 1e-4)


def test_writer_refuses_bad_samples_and_stays_usable(tmp_path):
    image = _samples(1)[0].image
    root = tmp_path / 'ds'
    with LeRobotWriter(root, library=build_action_library()) as writer:
        writer.add(image, 'go', action='pick_r0_c0', episode=7, timestamp=1.0)
        writer.add(image, 'go', action='pick_r0_c1', episode=8, timestamp=0.0)
        with pytest.raises(ValueError, match='episode 7'):
            writer.add(image, 'go', action='pick_r0_c0', episode=7)
        with pytest.raises(ValueError, match='before the previous'):
            writer.add(image, 'go', action='pick_r0_c0', episode=8, timestamp=-1.0)
        with pytest.raises(ValueError, match='not in the library'):
            writer.add(image, 'go', action='fly_away', episode=8, timestamp=1.0)
        with pytest.raises(ValueError, match='has 7'):
            writer.add(image, 'go', action_vector=[1.0, 2.0], episode=8, timestamp=1.0)
        with pytest.raises(ValueError, match='cameras'):
            writer.add([image, image], 'go', action='pick_r0_c0', episode=8, timestamp=1.0)
        writer.add(image, 'stop', action='pick_r0_c2', episode=8, timestamp=0.5)
    ds = LeRobotV3Dataset(root)
    assert [r['action'] for r in ds.records] == ['pick_r0_c0', 'pick_r0_c1', 'pick_r0_c2']
    assert [r['episode'] for r in ds.records] == ['7', '8', '8']


def test_abort_and_exceptions_leave_nothing(tmp_path):
    samples = _samples(3)
    with pytest.raises(RuntimeError, match='boom'):
        with LeRobotWriter(tmp_path / 'ds', library=build_action_library()) as writer:
            for s in samples:
                writer.add(s.image, s.instruction, action=s.action_name)
            assert (writer.tmp / 'meta/actions.yaml').is_file()   # writing had begun
            raise RuntimeError('boom')
    writer = LeRobotWriter(tmp_path / 'ds2', images='parquet')
    writer.add(samples[0].image, 'go', action_vector=[1.0])
    writer.abort()
    with pytest.raises(ValueError, match='no samples'):
        LeRobotWriter(tmp_path / 'ds3').close()
    assert list(tmp_path.iterdir()) == []


def test_file_rollover_into_chunks(tmp_path):
    # Video sizes count encoded packets, which SVT-AV1 emits ~24 frames after their input:
    # episodes of 26 frames make the first one's size known when the second starts.
    samples = _samples(78, seed=3)
    root = _write(tmp_path / 'ds', samples, per_episode=26, chunks_size=2,
                  data_files_size_in_mb=1e-6, video_files_size_in_mb=1e-6)
    videos = sorted(p.relative_to(root).as_posix()
                    for p in (root / 'videos/observation.images.cam0').rglob('*.mp4'))
    assert [v.split('cam0/')[1] for v in videos] == [
        'chunk-000/file-000.mp4', 'chunk-000/file-001.mp4', 'chunk-001/file-000.mp4']
    assert len(list((root / 'data').rglob('*.parquet'))) == 3
    episodes = pq.read_table(root / 'meta/episodes/chunk-000/file-000.parquet').to_pylist()
    assert [(r['data/chunk_index'], r['data/file_index']) for r in episodes] == [
        (0, 0), (0, 1), (1, 0)]
    assert [r['videos/observation.images.cam1/from_timestamp'] for r in episodes] == [0, 0, 0]
    ds = LeRobotV3Dataset(root)
    assert len(ds) == 78
    for i in (0, 25, 26, 51, 52, 77):   # first and last frame of each file
        assert ds[i]['action'] == samples[i].action_name
        assert _mae(ds[i]['images'][0], samples[i].image) < VIDEO_MAE_BOUND


# -- a dataset as LeRobot writes it ------------------------------------------------------------
FPS = 10
PER_EPISODE = 3


def _lerobot_dataset(root, samples, vectors, codec='libx264', late=()):
    """Three episodes in one data file and one video file (h264, time base 1/fps, frame k at
    k/fps, episodes back to back), tasks as a pandas index, no library index, stats columns
    in the episodes parquet: what LeRobot's recorder and converter leave on disk. Frames in
    ``late`` get a timestamp 5 s after their video frame (a broken recording)."""
    n = len(samples)
    episodes = n // PER_EPISODE
    video = root / 'videos/observation.images.front/chunk-000/file-000.mp4'
    video.parent.mkdir(parents=True)
    with av.open(str(video), 'w') as out:
        stream = out.add_stream(codec, rate=FPS, options={'g': '2', 'crf': '30'})
        stream.pix_fmt, stream.width, stream.height = 'yuv420p', SIZE, SIZE
        for k, s in enumerate(samples):
            frame = av.VideoFrame.from_ndarray(s.image, format='rgb24')
            frame.pts, frame.time_base = k, Fraction(1, FPS)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tasks = list(dict.fromkeys(s.instruction for s in samples))
    (root / 'meta/episodes/chunk-000').mkdir(parents=True)
    pandas = {'index_columns': ['task'], 'column_indexes': [], 'columns': [
        {'name': 'task_index', 'field_name': 'task_index', 'pandas_type': 'int64',
         'numpy_type': 'int64', 'metadata': None},
        {'name': 'task', 'field_name': 'task', 'pandas_type': 'unicode',
         'numpy_type': 'object', 'metadata': None}], 'pandas_version': '2.2.3'}
    pq.write_table(pa.table({'task_index': pa.array(range(len(tasks)), pa.int64()),
                             'task': tasks}).replace_schema_metadata(
        {'pandas': json.dumps(pandas)}), root / 'meta/tasks.parquet')
    frame_index = [k % PER_EPISODE for k in range(n)]
    data = pa.table({
        'action': pa.FixedSizeListArray.from_arrays(
            pa.array(np.asarray(vectors, np.float32).ravel()), 7),
        'observation.state': pa.FixedSizeListArray.from_arrays(
            pa.array(np.zeros(n * 2, np.float32)), 2),
        'timestamp': pa.array([f / FPS + 5 * (k in late) for k, f in enumerate(frame_index)],
                              pa.float32()),
        'frame_index': pa.array(frame_index, pa.int64()),
        'episode_index': pa.array([k // PER_EPISODE for k in range(n)], pa.int64()),
        'index': pa.array(range(n), pa.int64()),
        'task_index': pa.array([tasks.index(s.instruction) for s in samples], pa.int64())})
    (root / 'data/chunk-000').mkdir(parents=True)
    pq.write_table(data, root / 'data/chunk-000/file-000.parquet')
    key = 'videos/observation.images.front/'
    pq.write_table(pa.Table.from_pylist([
        {'episode_index': e, 'tasks': tasks[e * PER_EPISODE:(e + 1) * PER_EPISODE],
         'length': PER_EPISODE, 'data/chunk_index': 0, 'data/file_index': 0,
         'dataset_from_index': e * PER_EPISODE, 'dataset_to_index': (e + 1) * PER_EPISODE,
         key + 'chunk_index': 0, key + 'file_index': 0,
         key + 'from_timestamp': e * PER_EPISODE / FPS,
         key + 'to_timestamp': (e + 1) * PER_EPISODE / FPS,
         'stats/action/mean': [0.0] * 7,
         'meta/episodes/chunk_index': 0, 'meta/episodes/file_index': 0}
        for e in range(episodes)]), root / 'meta/episodes/chunk-000/file-000.parquet')
    scalar = {'shape': [1], 'names': None}
    info = {'codebase_version': 'v3.0', 'robot_type': 'so100', 'total_episodes': episodes,
            'total_frames': n, 'total_tasks': len(tasks), 'chunks_size': 1000,
            'data_files_size_in_mb': 100, 'video_files_size_in_mb': 200, 'fps': FPS,
            'splits': {'train': f'0:{episodes}'},
            'data_path': 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet',
            'video_path': 'videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4',
            'features': {
                'action': {'dtype': 'float32', 'shape': [7], 'names': [f'j{i}' for i in range(7)]},
                'observation.state': {'dtype': 'float32', 'shape': [2], 'names': ['a', 'b']},
                'observation.images.front': {
                    'dtype': 'video', 'shape': [SIZE, SIZE, 3],
                    'names': ['height', 'width', 'channels'],
                    'info': {'video.codec': 'h264', 'video.fps': FPS, 'has_audio': False}},
                'timestamp': {'dtype': 'float32', **scalar},
                'frame_index': {'dtype': 'int64', **scalar},
                'episode_index': {'dtype': 'int64', **scalar},
                'index': {'dtype': 'int64', **scalar},
                'task_index': {'dtype': 'int64', **scalar}}}
    (root / 'meta/info.json').write_text(json.dumps(info, indent=4))
    return root


def test_reads_a_dataset_lerobot_wrote_with_nearest_action_names(tmp_path):
    samples = _samples(9, seed=4)
    library = build_action_library()
    params = {a['name']: np.array(a['params']) for a in library}
    rng = np.random.default_rng(0)
    vectors = [params[s.action_name] + rng.normal(0, 0.01, 7) for s in samples]
    vectors[4] = np.full(7, 5.0)   # teleoperated, far from every library action
    root = _lerobot_dataset(tmp_path / 'lerobot', samples, vectors)

    ds = LeRobotV3Dataset(root, library=library)
    assert ds.action_mapping == 'nearest' and ds.unmapped_actions == 1
    assert len(ds) == 9
    for k, (item, s) in enumerate(zip(ds, samples, strict=True)):
        assert item['instruction'] == s.instruction
        assert item['episode'] == str(k // PER_EPISODE)
        assert item['timestamp'] == pytest.approx((k % PER_EPISODE) / FPS)
        assert item['action_vector'] == pytest.approx(vectors[k].astype(np.float32))
        if k == 4:
            assert item['action'] == '' and item['action_index'] == -1
        else:
            assert item['action'] == s.action_name
            assert item['action_index'] == ACTION_INDEX[s.action_name]
        assert item['images'].shape == (1, SIZE, SIZE, 3)
        assert _mae(item['images'][0], s.image) < VIDEO_MAE_BOUND
    assert ds.records[4]['action'] is None
    assert LeRobotV3Dataset(root, library=library, max_action_distance=np.inf).unmapped_actions == 0
    assert LeRobotV3Dataset(root).action_mapping == 'none'   # no library: vectors only

    three_d = [{'name': 'a', 'params': [0, 0, 0]}, {'name': 'b', 'params': [1, 0, 0]}]
    with pytest.raises(ValueError, match='have 7 values.*have 3'):
        LeRobotV3Dataset(root, library=three_d)


def test_refuses_other_versions_missing_files_and_shape_mismatches(tmp_path):
    samples = _samples(3, seed=5)
    library = build_action_library()
    vectors = [library[0]['params']] * 3
    root = _lerobot_dataset(tmp_path / 'lerobot', samples, vectors)
    info_path = root / 'meta/info.json'
    info = json.loads(info_path.read_text())

    info_path.write_text(json.dumps({**info, 'codebase_version': 'v2.1'}))
    with pytest.raises(ValueError, match=r"v2\.1.*convert"):
        LeRobotV3Dataset(root)
    features = {**info['features'], 'action': {**info['features']['action'], 'shape': [5]}}
    info_path.write_text(json.dumps({**info, 'features': features}))
    with pytest.raises(ValueError, match=r'file-000\.parquet: column "action" holds 7'):
        LeRobotV3Dataset(root)
    info_path.write_text(json.dumps(info))
    assert len(LeRobotV3Dataset(root)) == 3
    (root / 'meta/tasks.parquet').unlink()
    with pytest.raises(FileNotFoundError, match='tasks.parquet'):
        LeRobotV3Dataset(root)
    info_path.unlink()
    with pytest.raises(FileNotFoundError, match='info.json'):
        LeRobotV3Dataset(root)


def test_bad_frames_are_named_or_skipped(tmp_path):
    samples = _samples(6, seed=6)
    vectors = [build_action_library()[0]['params']] * 6
    root = _lerobot_dataset(tmp_path / 'lerobot', samples, vectors, late=(1,))
    ds = LeRobotV3Dataset(root)
    with pytest.raises(BadSampleError, match=r'file-000\.mp4: no frame within 0\.0001s'):
        ds[1]
    tolerant = LeRobotV3Dataset(root, skip_bad=True)
    assert tolerant[1]['instruction'] == samples[2].instruction   # the next good frame
    assert tolerant.num_bad == 1 and 'row 1' in next(iter(tolerant.bad))
    video = root / 'videos/observation.images.front/chunk-000/file-000.mp4'
    video.unlink()
    with pytest.raises(FileNotFoundError, match=r'file-000\.mp4: video file missing'):
        LeRobotV3Dataset(root)
    gone = LeRobotV3Dataset(root, skip_bad=True)
    assert len(gone) == 0 and list(gone.bad) == [str(video)]


@pytest.mark.skipif(not hasattr(os, 'geteuid') or os.geteuid() != 0,
                    reason='only root is allowed to be made real-time: nothing to undo')
def test_encoding_av1_as_root_leaves_no_thread_real_time(tmp_path):
    """SVT-AV1 switches the thread that opens it, and its workers, to SCHED_FIFO 99 when it
    may; threads started afterwards (DDS, executors) inherited that and starved the rest."""
    realtime = {os.SCHED_FIFO, os.SCHED_RR}
    policy = os.sched_getscheduler(0)
    encoder = VideoEncoder(tmp_path / 'v.mp4', 16, 16, 90_000, 30)
    encoder.write(np.zeros((16, 16, 3), np.uint8), 0)
    assert os.sched_getscheduler(0) == policy
    assert not {t for t in os.listdir('/proc/self/task')
                if os.sched_getscheduler(int(t)) in realtime}, 'encoder workers left real-time'
    encoder.close()
    release = threading.Event()
    started = threading.Thread(target=release.wait)
    started.start()
    try:
        assert os.sched_getscheduler(started.native_id) == policy
    finally:
        release.set()
        started.join()
