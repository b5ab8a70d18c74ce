"""Write a LeRobotDataset v3.0 with pyarrow and PyAV, behind the same interface as
``data.dataset.DatasetWriter`` so the bag converter can write either format.

What a sample becomes (see ``FORMAT.md``, section "LeRobotDataset v3"):

- its images: frames of one AV1 MP4 per camera (``images='video'``, LeRobot's default) or PNG
  bytes inside the data parquet (``images='parquet'``, lossless);
- its instruction: a task (``meta/tasks.parquet``), referred to by ``task_index``;
- its action: the ``action`` vector (float32 [D]), and the library name as ``library_index``
  into ``meta/actions.yaml`` (-1: none);
- its episode id: a contiguous ``episode_index`` 0, 1, ...; the id itself is kept as text in
  the episodes parquet (``episode_name``);
- its time: ``timestamp`` is ``frame_index / fps`` (every episode starts at 0 and advances by
  exactly 1/fps, as LeRobot records), and its video frame is shown at exactly
  ``from_timestamp + timestamp`` of a constant-frame-rate file: LeRobot's default decoder
  (torchcodec) finds a frame by ``round(time * fps)`` and misses any other timing. The time
  the writer was given is kept, unchanged, as ``source_timestamp`` (float64).

Everything is written under a hidden temp directory beside ``root`` and renamed into place by
``close()``; an exception inside ``with`` (or ``abort()``) deletes it.
"""
from __future__ import annotations

import json
import math
import numbers
import os
from copy import deepcopy
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ...actions.library import load_library
from ...files import StagedDirectory
from ..dataset import save_library
from . import lerobot_layout as L
from .lerobot_stats import count_pixels, episode_splits, image_stats, vector_stats
from .lerobot_streams import DataFiles, EpisodeRows, VideoTrack
from .lerobot_video import CRF, GOP, PIX_FMT, PRESET, ticks_per_second

# Data rows are written as a parquet row group once this many bytes are buffered (or at the
# end of an episode): small enough that a reader fetching one PNG decompresses little.
ROW_GROUP_BYTES = 8 << 20
# Without fps the rate is the median spacing of consecutive samples of an episode, measured
# on the first samples: every frame time depends on the rate, so the writer holds samples
# (bounded) until FPS_ESTIMATE_SPACINGS spacings are known or FPS_ESTIMATE_MAX_HELD samples
# are held, then fixes it and writes them. No spacing at all: FALLBACK_FPS.
FPS_ESTIMATE_SPACINGS = 16
FPS_ESTIMATE_MAX_HELD = 32
FALLBACK_FPS = 30
MIN_VIDEO_SIDE = 8   # SVT-AV1 refuses smaller frames


class LeRobotWriter(StagedDirectory):
    """Write a LeRobotDataset v3.0 directory atomically, one sample at a time.

    Args:
        root: the dataset directory to create.
        library: action library, stored as ``meta/actions.yaml``: a list of action dicts (as
            ``build_action_library()`` returns), a path to a library YAML, or an object with
            ``to_yaml(path)``. Needed to give samples an action by name.
        overwrite: replace an existing ``root`` on close (otherwise FileExistsError).
        fps: the dataset's frame rate: frame k of an episode gets ``timestamp`` k / fps.
            Default: the median spacing of the first samples' timestamps (see
            ``FPS_ESTIMATE_SPACINGS``), rounded to a whole number of frames per second; 30
            when none of the first ``FPS_ESTIMATE_MAX_HELD`` samples share an episode.
        images: ``'video'`` (AV1 MP4, lossy) or ``'parquet'`` (PNG in the data files).
        camera_keys: names of the cameras (``cam0`` or ``observation.images.cam0``);
            default ``cam0, cam1, ...``.
        robot_type: ``info.json`` ``robot_type``.
        chunks_size, data_files_size_in_mb, video_files_size_in_mb: LeRobot's file rollover:
            a new data (video) file starts at an episode boundary once the current one plus
            the previous episode's size reaches the limit; after ``chunks_size`` files the
            next chunk folder starts.
        crf: AV1 quality (LeRobot: 30; lower is better and larger).

    Samples must come in order: the samples of an episode are consecutive, and within an
    episode their timestamps do not decrease. The timestamps given are kept as
    ``source_timestamp``; only their order matters to the frame times.
    """

    def __init__(self, root: str | os.PathLike, library=None, overwrite: bool = False,
                 fps: float | None = None, images: str = 'video', camera_keys=None,
                 robot_type: str | None = None, chunks_size: int = L.DEFAULT_CHUNKS_SIZE,
                 data_files_size_in_mb: float = L.DEFAULT_DATA_FILE_SIZE_IN_MB,
                 video_files_size_in_mb: float = L.DEFAULT_VIDEO_FILE_SIZE_IN_MB,
                 crf: int = CRF):
        if images not in ('video', 'parquet'):
            raise ValueError(f"images must be 'video' or 'parquet', got {images!r}")
        if fps is not None and not (isinstance(fps, numbers.Real) and not isinstance(fps, bool)
                                    and math.isfinite(fps) and fps > 0):
            raise ValueError(f'fps must be a positive number, got {fps!r}')
        for name, value in (('chunks_size', chunks_size),
                            ('data_files_size_in_mb', data_files_size_in_mb),
                            ('video_files_size_in_mb', video_files_size_in_mb)):
            if not (isinstance(value, numbers.Real) and value > 0):
                raise ValueError(f'{name} must be positive, got {value!r}')
        self.fps = None if fps is None else float(fps)
        self.images, self.robot_type, self.crf = images, robot_type, crf
        self.chunks_size = int(chunks_size)
        self.data_files_size_in_mb = data_files_size_in_mb
        self.video_files_size_in_mb = video_files_size_in_mb
        self._camera_names = None
        if camera_keys is not None:
            self._camera_names = [L.camera_key(str(k)) for k in camera_keys]
            if (not self._camera_names or any('/' in k for k in self._camera_names)
                    or len(set(self._camera_names)) != len(self._camera_names)):
                raise ValueError('camera_keys must be distinct names without "/", got '
                                 f'{list(camera_keys)}')
        super().__init__(root, overwrite)   # after the checks above: nothing left behind
        self._tracks: list[VideoTrack] = []
        try:
            (self.tmp / 'meta').mkdir()
            self.library = None if library is None else self._write_library(library)
        except BaseException:
            self.abort()
            raise
        self.count = 0          # samples accepted
        self._written = 0       # ... of which written (the others are held, see _held)
        self._ticks = None if self.fps is None else ticks_per_second(self.fps)
        self._tasks: dict[str, int] = {}
        self._episode_keys: set = set()
        self._episode_key = None           # the episode of the last accepted sample ...
        self._last_given = -math.inf       # ... and its given timestamp
        self._held: list[_Sample] = []     # accepted, not yet written (fps not known yet)
        self._spacings: list[float] = []   # seconds between samples, for the fps estimate
        self._episodes: list[dict] = []       # finished episodes' rows for meta/episodes
        self._episode_splits: list[set] = []
        self._ep: EpisodeRows | None = None
        self._features: dict | None = None    # fixed by the first sample
        self._schema: pa.Schema | None = None
        self._cameras: list[str] = []
        self._sizes: list[tuple[int, int]] = []
        self._dim = None if self.library is None else self.library.param_dim
        self._has_split = None
        self._data = DataFiles(self.tmp, self.chunks_size, data_files_size_in_mb)
        self._values: dict[str, list[np.ndarray]] = {}   # every frame's numeric columns
        self._histograms: list[np.ndarray] = []          # per camera [3, 256] pixel counts

    def _write_library(self, library):
        """Store the library as meta/actions.yaml (as DatasetWriter does) and load it back."""
        path = self.tmp / L.LIBRARY_PATH
        save_library(library, path)
        try:
            return load_library(path)
        except ValueError as e:
            raise ValueError(f'the action library cannot be stored as {L.LIBRARY_PATH}: '
                             f'{e}') from e

    # -- one sample -------------------------------------------------------------------------
    def add(self, images, instruction: str, action: str | None = None, action_vector=None,
            episode: int | str = 0, timestamp: float = 0.0, split: str | None = None,
            color: str = 'rgb') -> int:
        """Append one sample; ``images`` is one HxWx3 uint8 image or a list (one per camera).

        Everything is checked before anything is written, so a refused sample (ValueError)
        leaves the writer as it was. Returns the sample's position (its ``index``).
        """
        if self.closed:
            raise RuntimeError('LeRobotWriter is closed')
        if action is None and action_vector is None:
            raise ValueError('a sample needs an action name, an action_vector or both')
        if color not in ('rgb', 'bgr'):
            raise ValueError(f"color must be 'rgb' or 'bgr', got {color!r}")
        frames = self._check_images(images, color)
        vector, library_index = self._check_action(action, action_vector)
        key = (isinstance(episode, str), episode)
        new_episode = key != self._episode_key
        if new_episode and key in self._episode_keys:
            raise ValueError(f'episode {episode!r} was written before and ended; the samples of '
                             'an episode must be consecutive')
        if split is not None and self._has_split is False:
            raise ValueError(f'split {split!r}: the first sample had no split, so this dataset '
                             'has no split column; give every sample a split or none')
        given = self._check_time(timestamp, new_episode)

        if self._features is None:
            self._setup(frames, vector.size, split is not None)
        if new_episode:
            self._episode_keys.add(key)
            self._episode_key = key
        elif self.fps is None and given > self._last_given:
            self._spacings.append(given - self._last_given)
        self._last_given = given
        if self.fps is None:   # held: the caller may reuse its image buffers meanwhile
            frames = [frame.copy() for frame in frames]
        self._held.append(_Sample(frames, str(instruction), vector, library_index, key, episode,
                                  given, split))
        if self.fps is None and (len(self._spacings) >= FPS_ESTIMATE_SPACINGS
                                 or len(self._held) >= FPS_ESTIMATE_MAX_HELD):
            self._settle_fps()
        if self.fps is not None:
            self._write_held()
        self.count += 1
        return self.count - 1

    def _check_images(self, images, color: str) -> list[np.ndarray]:
        cams = [images] if isinstance(images, np.ndarray) and images.ndim == 3 else list(images)
        if not cams:
            raise ValueError('a sample needs at least one image')
        frames = []
        for cam, image in enumerate(cams):
            image = np.asarray(image)
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f'camera {cam}: expected an HxWx3 uint8 image, got '
                                 f'{image.dtype} {image.shape}')
            frames.append(image[:, :, ::-1] if color == 'bgr' else image)
        if self._features is None:
            if self._camera_names is not None and len(self._camera_names) != len(frames):
                raise ValueError(f'{len(frames)} images, but camera_keys names '
                                 f'{len(self._camera_names)}: {self._camera_names}')
            small = [f.shape for f in frames if min(f.shape[:2]) < MIN_VIDEO_SIDE]
            if self.images == 'video' and small:
                raise ValueError(f'image of {small[0][1]}x{small[0][0]} pixels: AV1 video '
                                 f'needs at least {MIN_VIDEO_SIDE}x{MIN_VIDEO_SIDE}; use '
                                 "images='parquet'")
            return frames
        if len(frames) != len(self._cameras):
            raise ValueError(f'{len(frames)} images, the dataset has {len(self._cameras)} '
                             f'cameras {self._cameras}')
        for key, size, frame in zip(self._cameras, self._sizes, frames, strict=True):
            if frame.shape[:2] != size:
                raise ValueError(f'{key}: image of {frame.shape[1]}x{frame.shape[0]}, the '
                                 f'earlier ones are {size[1]}x{size[0]}; a camera has one '
                                 'size in a LeRobot dataset (vla-bag-to-dataset --resize WxH '
                                 'makes it so)')
        return frames

    def _check_action(self, action, action_vector) -> tuple[np.ndarray, int]:
        vector = None
        if action_vector is not None:
            vector = np.asarray(action_vector, dtype=np.float64).ravel()
            if vector.size == 0 or not np.all(np.isfinite(vector)):
                raise ValueError(f'action_vector must be non-empty and finite, got '
                                 f'{vector.tolist()}')
        index = -1
        if action is not None:
            if self.library is None:
                raise ValueError(f'action {action!r}: the LeRobot format keeps action names as '
                                 'indices into the library, and this writer has no library '
                                 '(pass library=...)')
            try:
                index = self.library.index(str(action))
            except KeyError:
                raise ValueError(f'action {action!r} is not in the library '
                                 f'({len(self.library)} actions)') from None
            if vector is None:
                vector = self.library.params()[index].astype(np.float64)
        if self._dim is not None and vector.size != self._dim:
            origin = 'the library' if self.library is not None else 'the first sample'
            raise ValueError(f'action_vector has {vector.size} values; the dataset\'s action '
                             f'has {self._dim} ({origin})')
        return vector.astype(np.float32), index

    def _check_time(self, timestamp, new_episode: bool) -> float:
        """The given timestamp as a float, refused when not finite or (within an episode)
        earlier than the previous sample's. Equal times are fine: frames are placed by
        their position in the episode, not by this time."""
        given = float(timestamp)
        if not math.isfinite(given):
            raise ValueError(f'timestamp must be finite, got {timestamp!r}')
        if not new_episode and given < self._last_given:
            raise ValueError(f'episode {self._episode_key[1]!r}: timestamp {given} is before '
                             f"the previous sample's {self._last_given}; an episode's samples "
                             'must be in time order')
        return given

    def _settle_fps(self) -> None:
        """Fix the frame rate from the spacings seen so far (see FPS_ESTIMATE_SPACINGS)."""
        spacing = float(np.median(self._spacings)) if self._spacings else 1 / FALLBACK_FPS
        self.fps = float(max(1, round(1 / spacing)))
        self._ticks = ticks_per_second(self.fps)

    def _write_held(self) -> None:
        """Write the samples held so far, in order (the rate is known)."""
        held, self._held = self._held, []
        for sample in held:
            if self._ep is None or sample.key != self._ep.key:
                self._finish_episode()
                self._start_episode(sample.key, sample.episode)
            self._write_frame(sample)

    # -- layout, fixed by the first sample ----------------------------------------------------
    def _setup(self, frames: list[np.ndarray], dim: int, has_split: bool) -> None:
        self._cameras = self._camera_names or [L.camera_key(f'cam{i}')
                                               for i in range(len(frames))]
        self._sizes = [f.shape[:2] for f in frames]
        self._dim, self._has_split = dim, has_split
        params = (self.library.parameter_names if self.library is not None
                  else [f'p{i}' for i in range(dim)])
        features = {L.ACTION: {'dtype': 'float32', 'shape': [dim], 'names': list(params)},
                    L.LIBRARY_INDEX: {'dtype': 'int64', 'shape': [1], 'names': None}}
        if has_split:
            features[L.SPLIT] = {'dtype': 'string', 'shape': [1], 'names': None}
        features[L.SOURCE_TIMESTAMP] = {'dtype': 'float64', 'shape': [1], 'names': None}
        kind = 'video' if self.images == 'video' else 'image'
        for key, (h, w) in zip(self._cameras, self._sizes, strict=True):
            features[key] = {'dtype': kind, 'shape': [h, w, 3],
                             'names': ['height', 'width', 'channels'],
                             'info': {'is_depth_map': False}}
        features.update(deepcopy(L.DEFAULT_FEATURES))
        self._features = features
        self._schema = L.data_schema(features)
        self._histograms = [np.zeros((3, 256), np.int64) for _ in self._cameras]

    # -- episodes -------------------------------------------------------------------------------
    def _start_episode(self, key, episode) -> None:
        self._ep = EpisodeRows(key, episode, len(self._episodes), self._written, self._schema,
                            len(self._cameras))
        self._data.start_episode()
        if self.images == 'video' and not self._tracks:   # the first episode: fps is known now
            limit = self.video_files_size_in_mb * 2**20
            self._tracks = [VideoTrack(self.tmp, cam, w, h, self._ticks, self.fps, limit,
                                        self.chunks_size, self.crf)
                            for cam, (h, w) in zip(self._cameras, self._sizes, strict=True)]
        for track in self._tracks:
            track.start_episode()

    def _write_frame(self, sample: _Sample) -> None:
        ep, task, vector = self._ep, sample.task, sample.vector
        task_index = self._tasks.setdefault(task, len(self._tasks))
        if task not in ep.tasks:
            ep.tasks.append(task)
        ep.splits.add(sample.split)
        for c, frame in enumerate(sample.frames):
            count_pixels(self._histograms[c], ep.histograms[c], frame)
            if self._tracks:
                self._tracks[c].write(frame)
            else:
                ok, png = cv2.imencode('.png', np.ascontiguousarray(frame[:, :, ::-1]))
                if not ok:
                    raise OSError(f'{self._cameras[c]}: could not encode a PNG')
                ep.row_bytes += png.nbytes
                ep.rows[self._cameras[c]].append(
                    {'bytes': png.tobytes(), 'path': f'frame-{ep.length:06d}.png'})
        # The frame's time on the dataset's regular clock, as LeRobot's recorder stores it.
        stamp = np.float32(ep.length / self.fps)
        row = {L.ACTION: vector, L.LIBRARY_INDEX: sample.library_index,
               L.SOURCE_TIMESTAMP: sample.given, 'timestamp': stamp, 'frame_index': ep.length,
               'episode_index': ep.index, 'index': self._written, 'task_index': task_index}
        for name, value in row.items():
            ep.rows[name].append(value)
            ep.values[name].append(value)
        if self._has_split:
            ep.rows[L.SPLIT].append('' if sample.split is None else str(sample.split))
        ep.row_bytes += 72 + 4 * vector.size
        ep.length += 1
        self._written += 1
        if ep.row_bytes >= ROW_GROUP_BYTES:
            self._data.write(ep.take_rows())

    def _finish_episode(self) -> None:
        ep = self._ep
        if ep is None:
            return
        self._ep = None
        self._data.write(ep.take_rows())
        row = {'episode_index': ep.index, 'tasks': ep.tasks, 'length': ep.length,
               'data/chunk_index': self._data.chunk, 'data/file_index': self._data.file,
               'dataset_from_index': ep.first, 'dataset_to_index': ep.first + ep.length}
        for track in self._tracks:
            row.update(track.finish_episode())
        stats = {name: vector_stats(np.stack(values).reshape(ep.length, -1))
                 for name, values in ep.values.items()}
        for key, histogram in zip(self._cameras, ep.histograms, strict=True):
            stats[key] = image_stats(histogram, ep.length)
        for feature, feature_stats in stats.items():
            for stat, value in feature_stats.items():
                row[f'stats/{feature}/{stat}'] = value.tolist()
        row.update({'meta/episodes/chunk_index': 0, 'meta/episodes/file_index': 0,
                    L.EPISODE_NAME: str(ep.id)})
        self._episodes.append(row)
        self._episode_splits.append(ep.splits)
        for name, values in ep.values.items():
            self._values.setdefault(name, []).append(np.stack(values).reshape(ep.length, -1))

    # -- finishing --------------------------------------------------------------------------
    def close(self) -> Path:
        """Write the metadata and move the dataset into place (atomic rename).

        Raises:
            ValueError: nothing was added (a LeRobot dataset needs a frame); nothing written.
            FileExistsError: ``root`` appeared meanwhile and ``overwrite`` is False.
        """
        return super().close()

    def _finish(self) -> None:
        if self.count == 0:
            raise ValueError(f'{self.root}: no samples were added; nothing written')
        if self.fps is None:   # fewer samples than the estimate waits for
            self._settle_fps()
        self._write_held()
        self._finish_episode()
        for track in self._tracks:
            track.close()
        self._data.close()
        self._write_meta()

    def _final_fps(self) -> int | float:
        return round(self.fps) if abs(self.fps - round(self.fps)) < 1e-9 else self.fps

    def _write_meta(self) -> None:
        fps = self._final_fps()
        features = self._features
        for key, (h, w) in zip(self._cameras, self._sizes, strict=True):
            if features[key]['dtype'] == 'video':
                features[key]['info'] = {
                    'video.height': h, 'video.width': w, 'video.codec': 'av1',
                    'video.pix_fmt': PIX_FMT, 'video.fps': fps, 'video.channels': 3,
                    'has_audio': False, 'video.g': GOP, 'video.crf': self.crf,
                    'video.preset': PRESET, 'video.fast_decode': 0,
                    'video.video_backend': 'pyav', 'video.extra_options': {},
                    'is_depth_map': False}
        pq.write_table(L.tasks_table(list(self._tasks)), self.tmp / L.TASKS_PATH)
        episodes = self.tmp / L.EPISODES_PATH.format(chunk_index=0, file_index=0)
        episodes.parent.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(self._episodes), episodes, compression='snappy')
        info = {'codebase_version': L.CODEBASE_VERSION, 'fps': fps, 'features': features,
                'total_episodes': len(self._episodes), 'total_frames': self.count,
                'total_tasks': len(self._tasks), 'chunks_size': self.chunks_size,
                'data_files_size_in_mb': self.data_files_size_in_mb,
                'video_files_size_in_mb': self.video_files_size_in_mb,
                'data_path': L.DATA_PATH,
                'video_path': L.VIDEO_PATH if self._tracks else None,
                'robot_type': self.robot_type,
                'splits': episode_splits(self._episode_splits)}
        (self.tmp / L.INFO_PATH).write_text(json.dumps(info, indent=4) + '\n', encoding='utf-8')
        stats = {name: vector_stats(np.concatenate(values))
                 for name, values in self._values.items()}
        for key, histogram in zip(self._cameras, self._histograms, strict=True):
            stats[key] = image_stats(histogram, self.count)
        stats = {f: {k: v.tolist() for k, v in s.items()} for f, s in stats.items()}
        (self.tmp / L.STATS_PATH).write_text(json.dumps(stats, indent=4) + '\n', encoding='utf-8')

    def _drop(self) -> None:
        for track in self._tracks:
            track.abort()
        if hasattr(self, '_data'):
            self._data.abort()


class _Sample:
    """A checked sample, held until the frame rate is known."""

    def __init__(self, frames, task, vector, library_index, key, episode, given, split):
        self.frames, self.task, self.vector = frames, task, vector
        self.library_index, self.key, self.episode = library_index, key, episode
        self.given, self.split = given, split
