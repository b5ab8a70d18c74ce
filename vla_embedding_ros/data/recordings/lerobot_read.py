"""Read a LeRobotDataset v3.0 directory (ours or one LeRobot wrote) as training samples, with
pyarrow and PyAV only.

Items are the same dicts ``data.dataset.JSONLDataset`` gives, so training and evaluation take
either format::

    images         uint8 [C, H, W, 3] RGB, one per camera (decoded from the MP4 at the frame's
                   time, or from the PNG bytes in the data parquet)
    instruction    the frame's task string
    action_index   position of the action's name in the library, -1 when it has none
    action_vector  float32 [D], the ``action`` column
    action         the name ('' when none), episode (str), timestamp (float: the time the
                   writer was given, ``source_timestamp``, when the dataset keeps it; else
                   the ``timestamp`` column)

Action names (see FORMAT.md): a dataset from ``LeRobotWriter`` names them through its
``library_index`` column and ``meta/actions.yaml``. A dataset LeRobot recorded has only
vectors; each is given the name of the library action with the nearest ``params``
(Euclidean), if that is within ``max_action_distance``, and no name otherwise.

Video frames are found at ``from_timestamp + timestamp`` of their file, whatever the timing:
regular ``frame_index / fps`` (LeRobot's datasets and this package's exports) or the irregular
times that exports before ``source_timestamp`` stored.

What it refuses, with the file and field named: a folder without ``meta/info.json``, another
``codebase_version`` (v2.1 must first be converted with LeRobot's converter), missing meta or
data files, and parquet columns that disagree with the shapes ``info.json`` declares.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch.utils.data

from ...actions.library import as_library, load_library
from ...actions.matching import half_min_gap, nearest_actions
from ...encoded_image import DEFAULT_MAX_PIXELS, EncodedImageError, decode_bounded
from ..dataset import BadSampleError
from . import lerobot_layout as L
from .lerobot_meta import read_episodes, read_info, read_tasks
from .lerobot_video import VideoFrameError, VideoReaderCache

# LeRobotDataset's default: a decoded frame must be this close to the time asked for.
DEFAULT_TOLERANCE_S = 1e-4
# A row group is read whole to get one image out of it: bound what a dataset from elsewhere
# may make us read.
MAX_ROW_GROUP_BYTES = 512 << 20
_COLUMNS = ('index', 'episode_index', 'timestamp', 'task_index', L.ACTION)


class LeRobotV3Dataset(torch.utils.data.Dataset):
    """A LeRobotDataset v3.0 folder as a map-style dataset of JSONLDataset-like items.

    Args:
        root: the dataset folder (the one holding ``meta/`` and ``data/``).
        library: action library giving ``action_index``: a YAML path, a list of action dicts
            (or names), or an ``ActionLibrary``. Default: the dataset's ``meta/actions.yaml``.
        skip_bad: skip unusable frames instead of raising (as JSONLDataset): frames whose
            episode, task or video file is missing are dropped at load; a frame that does not
            decode is replaced by the next good one. ``num_bad`` / ``bad`` count them.
        split: keep only this split: the per-frame ``split`` column when there is one, else
            the episode ranges of ``info.json`` ``splits``.
        camera_keys: cameras to return, in order (``cam0`` or ``observation.images.cam0``);
            default: every RGB image/video feature (not depth maps), in ``info.json`` order.
        max_action_distance: for datasets without ``library_index``: how far (Euclidean, in
            params units) a vector may be from the nearest library action and still take its
            name. None: half the smallest distance between two library actions, so a name is
            only given when one action is unambiguously nearest. ``math.inf``: always.
        tolerance_s: how far a decoded video frame may be from the time asked for.
        max_pixels: refuse frames (video streams, PNGs) declaring more pixels (0 = no bound).
        max_open_videos: video files kept open per process.
    """

    def __init__(self, root: str | os.PathLike, library=None, skip_bad: bool = False,
                 split: str | None = None, camera_keys=None,
                 max_action_distance: float | None = None,
                 tolerance_s: float = DEFAULT_TOLERANCE_S, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_open_videos: int = 16):
        self.root = Path(root)
        self.skip_bad, self.tolerance_s, self.max_pixels = skip_bad, tolerance_s, max_pixels
        self.bad: dict[str, str] = {}
        self.info = read_info(self.root)
        self.features = self.info['features']
        self.fps = self.info['fps']
        self.cameras = self._camera_keys(camera_keys)
        self.action_dim = self._action_dim()
        self._tasks = read_tasks(self.root)
        self._episodes = read_episodes(self.root, self.info, self.cameras)
        frames = self._read_frames()
        keep = self._usable(frames)
        self._names_and_indices(frames, library, max_action_distance)
        if split is not None:
            keep &= self._in_split(frames, split)
        self._rows = np.flatnonzero(keep)
        self._frames = frames
        self.records = FrameRecords(self)
        self._videos = VideoReaderCache(max_open_videos, max_pixels)
        self._images = _ParquetImages(self._data_files)

    # -- cameras and action vectors -----------------------------------------------------------
    def _camera_keys(self, camera_keys) -> list[str]:
        where = self.root / L.INFO_PATH
        visual = [k for k, f in self.features.items() if f['dtype'] in ('video', 'image')]
        if not visual:
            raise ValueError(f'{where}: no image or video feature; there is nothing to see')
        rgb = [k for k in visual if not (self.features[k].get('info') or {}).get('is_depth_map')]
        keys = rgb if camera_keys is None else [L.camera_key(str(k)) for k in camera_keys]
        unknown = [k for k in keys if k not in visual]
        if unknown or not keys:
            raise ValueError(f'{where}: camera(s) {unknown or keys} not among its image/video '
                             f'features {visual}')
        self._sizes = {}
        for key in keys:
            feature = self.features[key]
            shape, names = feature['shape'], feature.get('names') or []
            channels_first = bool(names) and names[0] in ('channel', 'channels')
            if len(shape) != 3:
                raise ValueError(f'{where}: features[{key!r}] shape {shape} is not [H, W, C]')
            h, w, c = (shape[1], shape[2], shape[0]) if channels_first else shape
            depth = (feature.get('info') or {}).get('is_depth_map')
            if c != 3 or depth:
                raise ValueError(f'{where}: features[{key!r}] has {c} channel(s)'
                                 f'{" (a depth map)" if depth else ""}; only RGB cameras are read')
            self._sizes[key] = (h, w)
            if feature['dtype'] == 'video' and not isinstance(self.info.get('video_path'), str):
                raise ValueError(f"{where}: features[{key!r}] is a video but 'video_path' is "
                                 f'{self.info.get("video_path")!r}')
        return keys

    def _action_dim(self) -> int:
        where = self.root / L.INFO_PATH
        feature = self.features.get(L.ACTION)
        if feature is None:
            raise ValueError(f'{where}: no "action" feature; samples need action vectors')
        if feature['dtype'] not in ('float32', 'float64') or len(feature['shape']) != 1:
            raise ValueError(f'{where}: features["action"] must be a float32/float64 vector '
                             f'of shape [D], got {feature["dtype"]} {feature["shape"]}')
        return feature['shape'][0]

    def _read_frames(self) -> dict[str, np.ndarray]:
        """The per-frame columns of every data file (images excepted), concatenated."""
        folder = self.root / 'data'
        self._data_files = sorted(folder.glob('*/*.parquet'))
        if not self._data_files:
            raise FileNotFoundError(f'{folder}: no data parquet (data/chunk-XXX/file-XXX.parquet)')
        parts = []
        for file_id, path in enumerate(self._data_files):
            parts.append(self._read_data_file(file_id, path))
        frames = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        total = self.info['total_frames']
        if len(frames['index']) != total:
            raise ValueError(f'{folder}: {len(frames["index"])} frames in the data files, '
                             f'{self.root / L.INFO_PATH} says total_frames {total}')
        return frames

    def _read_data_file(self, file_id: int, path: Path) -> dict[str, np.ndarray]:
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f'{path}: not a readable parquet file ({e})') from e
        optional = [c for c in (L.LIBRARY_INDEX, L.SPLIT, L.SOURCE_TIMESTAMP)
                    if c in schema.names]
        declared = [k for k, f in self.features.items() if f['dtype'] != 'video']
        missing = [c for c in dict.fromkeys([*_COLUMNS, *declared]) if c not in schema.names]
        if missing:
            raise ValueError(f'{path}: missing column(s) {missing} (meta/info.json lists them '
                             'as features)')
        action = schema.field(L.ACTION).type
        if not (pa.types.is_fixed_size_list(action) or pa.types.is_list(action)) \
                or not pa.types.is_floating(action.value_type):
            raise ValueError(f'{path}: column "action" is {action}, not a list of floats')
        if pa.types.is_fixed_size_list(action) and action.list_size != self.action_dim:
            raise ValueError(f'{path}: column "action" holds {action.list_size} values per frame; '
                             f'meta/info.json features["action"] has shape [{self.action_dim}]')
        table = pq.read_table(path, columns=[*_COLUMNS, *optional])
        column = table[L.ACTION].combine_chunks()
        if column.null_count or (pa.types.is_list(action) and set(
                column.value_lengths().to_numpy(zero_copy_only=False)) != {self.action_dim}):
            raise ValueError(f'{path}: column "action" has frames without {self.action_dim} '
                             'values (meta/info.json features["action"] shape)')
        n = table.num_rows
        out = {'action': np.asarray(column.flatten(), np.float32).reshape(n, self.action_dim)}
        for name in ('index', 'episode_index', 'task_index'):
            out[name] = table[name].to_numpy().astype(np.int64)
        out['timestamp'] = table['timestamp'].to_numpy().astype(np.float64)
        # NaN: no source time (a LeRobot dataset, or an export older than the column).
        out['source_timestamp'] = (
            table[L.SOURCE_TIMESTAMP].to_numpy(zero_copy_only=False).astype(np.float64)
            if L.SOURCE_TIMESTAMP in optional else np.full(n, np.nan))
        out['library_index'] = (table[L.LIBRARY_INDEX].to_numpy().astype(np.int64)
                                if L.LIBRARY_INDEX in optional else np.full(n, -1, np.int64))
        out['split'] = np.array(table[L.SPLIT].to_pylist() if L.SPLIT in optional
                                else [None] * n, dtype=object)
        out['file'] = np.full(n, file_id, np.int64)
        out['row'] = np.arange(n, dtype=np.int64)
        return out

    def _usable(self, frames) -> np.ndarray:
        """Frames whose episode, task and video files exist (the others are bad)."""
        keep = np.ones(len(frames['index']), bool)
        for column, known, where in (('episode_index', self._episodes, 'a row in meta/episodes'),
                                     ('task_index', self._tasks, 'a task in meta/tasks.parquet')):
            for i in np.flatnonzero(~np.isin(frames[column], list(known))):
                self._reject(self._where(frames, i), f'{column} {frames[column][i]} has no {where}')
                keep[i] = False
        for index, episode in self._episodes.items():
            for path, _ in episode['video'].values():
                if not path.is_file():
                    rows = np.flatnonzero(frames['episode_index'] == index)
                    self._reject(str(path), f'video file missing (episode {index}, '
                                            f'{len(rows)} frames; {episode["where"]})',
                                 FileNotFoundError)
                    keep[rows] = False
        return keep

    def _where(self, frames, i: int) -> str:
        return f'{self._data_files[frames["file"][i]]}:row {frames["row"][i]}'

    def _reject(self, where: str, reason: str, exc_type=BadSampleError) -> None:
        if not self.skip_bad:
            raise exc_type(f'{where}: {reason}')
        self.bad[where] = reason

    # -- action names -----------------------------------------------------------------------------
    def _names_and_indices(self, frames, library, max_distance) -> None:
        """Give every frame an action name (or None) and an index into the target library."""
        own_path = self.root / L.LIBRARY_PATH
        own = load_library(own_path) if own_path.is_file() else None
        target = as_library(library) if library is not None else own
        names, params = ((target.names, target.params()) if target is not None
                         else (None, None))
        self.action_names = names or []
        n = len(frames['index'])
        self.unmapped_actions = 0
        self.action_distance = np.full(n, np.nan)
        self.max_action_distance = math.nan
        if own is not None and self.features.get(L.LIBRARY_INDEX) is not None:
            self.action_mapping = 'library_index'
            idx = frames['library_index']
            bad = (idx >= len(own)) | (idx < -1)
            if bad.any():
                raise ValueError(f'{self._where(frames, np.flatnonzero(bad)[0])}: library_index '
                                 f'{idx[bad][0]} outside {own_path} ({len(own)} actions)')
            labels = np.array([None, *own.names], dtype=object)[idx + 1]
        elif names is not None:
            self.action_mapping = 'nearest'
            labels = self._nearest(frames['action'], names, params, max_distance)
        else:
            self.action_mapping = 'none'
            labels = np.full(n, None, dtype=object)
        lookup = {name: i for i, name in enumerate(self.action_names)}
        self._labels = labels
        self._label_index = np.array([lookup.get(x, -1) for x in labels], np.int64)

    def _nearest(self, vectors, names, params, max_distance) -> np.ndarray:
        """The name of the library action nearest to each vector (None when too far)."""
        if params is None:
            raise ValueError(f'{self.root}: the dataset has action vectors only, and the library '
                             'has no params to match them against')
        params = np.asarray(params, np.float64)
        if params.shape[1] != self.action_dim:
            raise ValueError(f'{self.root}: its action vectors have {self.action_dim} values '
                             f'(meta/info.json features["action"]) but the library\'s params '
                             f'have {params.shape[1]}; they cannot be matched')
        best, distance = nearest_actions(vectors, params, max_distance)
        self.action_distance = distance
        self.max_action_distance = (half_min_gap(params) if max_distance is None
                                    else float(max_distance))
        near = best >= 0
        self.unmapped_actions = int((~near).sum())
        labels = np.array(names, dtype=object)[np.maximum(best, 0)]
        labels[~near] = None
        return labels

    def unnamed_reason(self) -> str | None:
        """Why frames have no action name, in numbers, when their vectors were too far from
        every library action (``action_mapping == 'nearest'``); None otherwise."""
        if self.action_mapping != 'nearest' or not self.unmapped_actions:
            return None
        d = self.action_distance[np.isfinite(self.action_distance)]
        far = d[d > self.max_action_distance]
        return (f'{self.unmapped_actions} of its {len(d)} action vectors are farther from the '
                f'nearest library action than max_action_distance {self.max_action_distance:.4g}'
                f' allows (the distance to the nearest library action: min {d.min():.4g}, '
                f'median {np.median(d):.4g}, max {d.max():.4g}; of the unnamed ones min '
                f'{far.min():.4g}, median {np.median(far):.4g})')

    def _in_split(self, frames, split: str) -> np.ndarray:
        if any(s is not None for s in frames['split']):
            return frames['split'] == split
        ranges = self.info.get('splits') or {}
        span = ranges.get(split)
        if not isinstance(span, str) or ':' not in span:
            return np.zeros(len(frames['index']), bool)
        start, stop = (int(x) for x in span.split(':'))
        return (frames['episode_index'] >= start) & (frames['episode_index'] < stop)

    # -- items --------------------------------------------------------------------------------
    @property
    def num_bad(self) -> int:
        """How many bad frames (or files) were skipped so far."""
        return len(self.bad)

    @property
    def skipped(self) -> int:
        """Alias of ``num_bad`` (the name the training sources read)."""
        return self.num_bad

    def __len__(self) -> int:
        return len(self._rows)

    def _image(self, key: str, i: int, episode: dict) -> np.ndarray:
        f = self._frames
        if self.features[key]['dtype'] == 'video':
            path, start = episode['video'][key]
            seconds = start + float(f['timestamp'][i])
            try:
                image = self._videos.frame_at(path, seconds, self.tolerance_s)
            except VideoFrameError as e:
                raise BadSampleError(f'{e} (frame index {f["index"][i]})') from e
            where = str(path)
        else:
            where = self._where(f, i)
            data = self._images.get(f['file'][i], f['row'][i], key)
            if data is None:
                raise BadSampleError(f'{where}: {key} holds no embedded image bytes')
            try:
                image = decode_bounded(data, self.max_pixels)[:, :, ::-1]
            except EncodedImageError as e:
                raise BadSampleError(f'{where}: {key}: {e}') from e
        if image.shape[:2] != self._sizes[key]:
            raise BadSampleError(f'{where}: {key} frame is {image.shape[1]}x{image.shape[0]}, '
                                 f'meta/info.json says {self._sizes[key][1]}x'
                                 f'{self._sizes[key][0]}')
        return image

    def _load(self, i: int) -> dict:
        f = self._frames
        episode = self._episodes[int(f['episode_index'][i])]
        images = [self._image(key, i, episode) for key in self.cameras]
        if len({im.shape for im in images}) > 1:
            raise BadSampleError(f'{self._where(f, i)}: cameras differ in size '
                                 f'{[im.shape for im in images]}')
        label = self._labels[i]
        return {'images': np.ascontiguousarray(np.stack(images)),
                'instruction': self._tasks[int(f['task_index'][i])],
                'action_index': int(self._label_index[i]),
                'action_vector': f['action'][i].copy(),
                'action': label or '',
                'episode': episode['name'],
                'timestamp': self._time(i)}

    def _time(self, i: int) -> float:
        """Frame ``i``'s time: the one the writer was given when kept, else ``timestamp``."""
        source = self._frames['source_timestamp'][i]
        return float(source) if np.isfinite(source) else _seconds(self._frames['timestamp'][i])

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f'sample {i} out of range for {len(self)} samples')
        for k in range(len(self)):
            row = int(self._rows[(i + k) % len(self)])
            try:
                return self._load(row)
            except BadSampleError as e:
                if not self.skip_bad:
                    raise
                self.bad[self._where(self._frames, row)] = str(e)
        raise BadSampleError(f'{self.root}: no readable sample left')


class FrameRecords(Sequence):
    """One dict per selected frame, made on demand (a list of dicts would cost ~1 KB a frame):
    ``action`` (library name or None), ``action_index``, ``instruction``, ``episode``,
    ``timestamp``, ``index``, ``split``."""

    def __init__(self, dataset: LeRobotV3Dataset):
        self._ds = dataset

    def __len__(self) -> int:
        return len(self._ds._rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        ds, f = self._ds, self._ds._frames
        row = int(ds._rows[i])
        episode = ds._episodes.get(int(f['episode_index'][row]), {})
        return {'action': ds._labels[row], 'action_index': int(ds._label_index[row]),
                'instruction': ds._tasks.get(int(f['task_index'][row])),
                'episode': episode.get('name'), 'timestamp': ds._time(row),
                'index': int(f['index'][row]), 'split': f['split'][row]}


class _ParquetImages:
    """Image bytes of ``image`` features, read a row group at a time and kept (a few, LRU):
    neighbouring frames share a row group. Dropped on pickling and after a fork."""

    def __init__(self, files: list[Path], keep: int = 4):
        self.files, self.keep = files, keep
        self._reset()

    def _reset(self) -> None:
        self._open: dict[int, tuple[pq.ParquetFile, np.ndarray]] = {}
        self._groups: OrderedDict = OrderedDict()
        self._pid = os.getpid()

    def get(self, file_id: int, row: int, key: str) -> bytes | None:
        """The image bytes of ``key`` in row ``row`` of data file ``file_id`` (None: none)."""
        try:
            return self._get(file_id, row, key)
        except (pa.ArrowException, OSError) as e:
            raise BadSampleError(f'{self.files[file_id]}: cannot read {key} ({e})') from e

    def _get(self, file_id: int, row: int, key: str) -> bytes | None:
        if self._pid != os.getpid():
            self._reset()
        if file_id not in self._open:
            parquet = pq.ParquetFile(self.files[file_id])
            meta = parquet.metadata
            starts = np.cumsum([0] + [meta.row_group(g).num_rows
                                      for g in range(meta.num_row_groups)])
            self._open[file_id] = (parquet, starts)
        parquet, starts = self._open[file_id]
        group = int(np.searchsorted(starts, row, side='right') - 1)
        cached = self._groups.pop((file_id, group, key), None)
        if cached is None:
            size = parquet.metadata.row_group(group).total_byte_size
            if size > MAX_ROW_GROUP_BYTES:
                raise BadSampleError(f'{self.files[file_id]}: row group {group} of {size} bytes '
                                     f'> {MAX_ROW_GROUP_BYTES}; not read')
            cached = parquet.read_row_group(group, columns=[key]).column(0).combine_chunks()
            while len(self._groups) >= self.keep:
                self._groups.popitem(last=False)
        self._groups[(file_id, group, key)] = cached
        value = cached[row - int(starts[group])]
        data = value.get('bytes') if isinstance(value, pa.StructScalar) else None
        return None if data is None or not data.is_valid else data.as_py()

    def __getstate__(self) -> dict:
        return {'files': self.files, 'keep': self.keep}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)


def _seconds(stamp: float) -> float:
    """A float32 timestamp as the shortest float that reads back to it (0.1, not
    0.10000000149011612): what the writer was given, when it fit a float32."""
    return float(str(np.float32(stamp)))


