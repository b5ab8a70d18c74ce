"""LeRobot's default decoder finds every frame of our exports: each episode starts at 0 and
advances by exactly 1/fps (``frame_index / fps``) in a constant-frame-rate video, the times the
writer was given survive as ``source_timestamp``, and exports made before that (irregular
video times, no ``source_timestamp``) still read."""
import json

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vla_embedding_ros.data.recordings.lerobot_read import LeRobotV3Dataset
from vla_embedding_ros.data.recordings.lerobot_video import VideoEncoder
from vla_embedding_ros.data.recordings.lerobot_write import (
    FALLBACK_FPS,
    FPS_ESTIMATE_SPACINGS,
    LeRobotWriter,
)
from vla_embedding_ros.data.tabletop import TabletopConfig, TabletopGenerator, build_action_library

SIZE = 64
VIDEO_MAE_BOUND = 12.0      # AV1 at CRF 30 on these frames: ~5 (see test_lerobot_format)
TORCHCODEC_TOLERANCE_S = 1e-4
CAM = 'observation.images.cam0'

# Irregular times as a recorder gives them: not starting at 0, jittered around 0.1 s, a
# repeated time, a gap, and a one-sample episode between two longer ones.
JITTER = [0.0, 0.093, 0.21, 0.21, 0.305, 0.38, 0.52]
MULTI = ([('pick', 12.37 + t) for t in JITTER] + [('lone', 3.0)]
         + [('place', 40.0 + 0.1 * k + 0.004 * (k % 2)) for k in range(12)])
ONE = [('only', 0.5 + t) for t in (0.0, 0.07, 0.07, 0.2, 0.23, 0.4, 0.41, 0.6, 0.66)]


def _samples(n, seed=0):
    return list(TabletopGenerator(TabletopConfig(image_size=SIZE), seed=seed).samples(n))


def _mae(a, b):
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _export(root, samples, given, cameras=2, **kw):
    with LeRobotWriter(root, library=build_action_library(), **kw) as writer:
        for s, (episode, t) in zip(samples, given, strict=True):
            images = [s.image, s.image[:, ::-1]][:cameras]
            writer.add(images, s.instruction, action=s.action_name, episode=episode, timestamp=t)
    return root


def _table(root, folder):
    return pa.concat_tables([pq.read_table(p) for p in sorted((root / folder).glob('*/*.parquet'))])


def torchcodec_misses(root) -> list[str]:
    """Every frame of every camera that LeRobot's torchcodec lookup would not find.

    LeRobot (``decode_video_frames_torchcodec``) asks for frame ``round(t * average_fps)`` of
    the file, t = ``from_timestamp + timestamp``, and raises ``FrameTimestampError`` unless
    that frame is shown within 1e-4 s of t. Emulated with PyAV: every frame's presentation
    time, and the average rate both ways torchcodec may take it (the header's, or frames over
    duration when it scans the file).
    """
    info = json.loads((root / 'meta/info.json').read_text())
    data = _table(root, 'data').to_pylist()
    episodes = {e['episode_index']: e for e in _table(root, 'meta/episodes').to_pylist()}
    cameras = [k for k, f in info['features'].items() if f['dtype'] == 'video']
    assert cameras, 'an export with video is needed'
    misses, files = [], {}
    for key in cameras:
        for row in data:
            ep = episodes[row['episode_index']]
            path = root / info['video_path'].format(
                video_key=key, chunk_index=ep[f'videos/{key}/chunk_index'],
                file_index=ep[f'videos/{key}/file_index'])
            if path not in files:
                with av.open(str(path)) as video:
                    stream = video.streams.video[0]
                    times = [float(f.pts * stream.time_base) for f in video.decode(stream)]
                    duration = float(stream.duration * stream.time_base)
                    rates = {float(stream.average_rate), len(times) / (duration - times[0])}
                files[path] = times, rates
            times, rates = files[path]
            t = ep[f'videos/{key}/from_timestamp'] + float(np.float32(row['timestamp']))
            for rate in rates:
                k = round(t * rate)
                if not (0 <= k < len(times) and abs(times[k] - t) < TORCHCODEC_TOLERANCE_S):
                    misses.append(f'{key} index {row["index"]} t={t:.6f} rate {rate}: frame {k}')
    return misses


@pytest.mark.parametrize('given, kw, fps', [
    (MULTI, {}, 10),                                   # fps estimated from the spacings
    (ONE, {'fps': 15}, 15),                            # one episode, fps given
    (MULTI, {'video_files_size_in_mb': 1e-6}, 10),     # a video file per episode
], ids=['multi-episode', 'one-episode', 'file-per-episode'])
def test_every_frame_is_where_torchcodec_looks(tmp_path, given, kw, fps):
    samples = _samples(len(given), seed=3)
    root = _export(tmp_path / 'ds', samples, given, **kw)
    assert torchcodec_misses(root) == []

    info = json.loads((root / 'meta/info.json').read_text())
    assert info['fps'] == fps and info['features'][CAM]['info']['video.fps'] == fps
    assert info['features']['source_timestamp'] == {'dtype': 'float64', 'shape': [1],
                                                    'names': None}
    data = _table(root, 'data')
    frame_index = data['frame_index'].to_pylist()
    assert frame_index == [sum(e == g[0] for e, _ in given[:i]) for i, g in enumerate(given)]
    assert data['timestamp'].to_pylist() == [np.float32(k / fps) for k in frame_index]
    assert data['source_timestamp'].to_pylist() == [t for _, t in given]   # exactly
    with av.open(str(next(root.glob(f'videos/{CAM}/*/*.mp4')))) as video:
        assert video.streams.video[0].average_rate == fps

    ds = LeRobotV3Dataset(root)
    assert [item['timestamp'] for item in ds] == [t for _, t in given]
    assert [r['timestamp'] for r in ds.records] == [t for _, t in given]
    for i, item in enumerate(ds):
        errors = [_mae(item['images'][1], s.image[:, ::-1]) for s in samples]
        assert int(np.argmin(errors)) == i and errors[i] < VIDEO_MAE_BOUND


def test_fps_from_the_first_spacings_or_the_fallback(tmp_path):
    """Without fps: the median spacing of the first samples, also when the writer closes
    before it has seen FPS_ESTIMATE_SPACINGS of them; 30 when no two samples share an
    episode. Frames held meanwhile are copies: the caller may reuse its buffer."""
    samples = _samples(6, seed=5)
    buffer = np.zeros((SIZE, SIZE, 3), np.uint8)

    def export(name, given):
        with LeRobotWriter(tmp_path / name, library=build_action_library(),
                           images='parquet') as writer:
            for s, (episode, t) in zip(samples, given, strict=False):
                buffer[...] = s.image   # one camera buffer, overwritten for every sample
                writer.add(buffer, s.instruction, action=s.action_name, episode=episode,
                           timestamp=t)
        return json.loads((tmp_path / name / 'meta/info.json').read_text())['fps']

    assert export('short', [(0, 0.2 * k) for k in range(5)]) == 5
    assert FPS_ESTIMATE_SPACINGS > 4
    assert export('lone', [(k, 7.0) for k in range(6)]) == FALLBACK_FPS
    ds = LeRobotV3Dataset(tmp_path / 'lone')
    assert [item['timestamp'] for item in ds] == [7.0] * 6
    for item, s in zip(ds, samples, strict=True):   # PNG: lossless
        assert np.array_equal(item['images'][0], s.image)
    data = _table(tmp_path / 'lone', 'data')
    assert data['timestamp'].to_pylist() == [0.0] * 6


def _make_older(root, given):
    """Turn a one-camera export into what the writer made before ``source_timestamp``: the
    given times (float32) in ``timestamp``, video frames at ``from_timestamp + timestamp``
    on a 90 kHz clock, each episode starting one frame period after the previous one ended."""
    ticks = 90_000
    info = json.loads((root / 'meta/info.json').read_text())
    del info['features']['source_timestamp']
    (root / 'meta/info.json').write_text(json.dumps(info, indent=4))
    data_path = root / 'data/chunk-000/file-000.parquet'
    data = pq.read_table(data_path).drop_columns(['source_timestamp'])
    stamps = np.array([t for _, t in given], np.float32)
    data = data.set_column(data.schema.get_field_index('timestamp'), 'timestamp',
                           pa.array(stamps, pa.float32()))
    pq.write_table(data, data_path)
    video_path = root / f'videos/{CAM}/chunk-000/file-000.mp4'
    with av.open(str(video_path)) as video:
        frames = [f.to_ndarray(format='rgb24') for f in video.decode(video=0)]
    episodes_path = root / 'meta/episodes/chunk-000/file-000.parquet'
    episodes = pq.read_table(episodes_path).to_pylist()
    encoder = VideoEncoder(video_path, SIZE, SIZE, ticks, 10)
    end, k = 0, 0
    for ep in episodes:
        first = k
        for _ in range(ep['length']):
            encoder.write(frames[k], end + round(float(stamps[k]) * ticks))
            k += 1
        ep[f'videos/{CAM}/from_timestamp'] = end / ticks
        end += round(float(stamps[k - 1]) * ticks) + ticks // 10
        ep[f'videos/{CAM}/to_timestamp'] = end / ticks
        assert first < k
    encoder.close()
    pq.write_table(pa.Table.from_pylist(episodes), episodes_path)


def test_reads_an_export_older_than_source_timestamp(tmp_path):
    # The older writer moved a repeated time one tick later; this fixture has none.
    given = [(e, t + 0.04 * (i == 3)) for i, (e, t) in enumerate(MULTI)]
    samples = _samples(len(given), seed=6)
    root = _export(tmp_path / 'old', samples, given, cameras=1)
    _make_older(root, given)
    ds = LeRobotV3Dataset(root)
    assert [item['timestamp'] for item in ds] == [float(str(np.float32(t))) for _, t in given]
    for order in (range(len(ds)), range(len(ds) - 1, -1, -1)):   # forward and seeking back
        fresh = LeRobotV3Dataset(root)
        for i in order:
            errors = [_mae(fresh[i]['images'][0], s.image) for s in samples]
            assert int(np.argmin(errors)) == i and errors[i] < VIDEO_MAE_BOUND
