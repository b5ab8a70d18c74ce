"""The metadata of a LeRobotDataset v3.0 folder (``meta/info.json``, ``meta/tasks.parquet``,
``meta/episodes/``), read and checked with the file and field named in every refusal."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ...files import read_json_object
from . import lerobot_layout as L

# Metadata parquet files are kilobytes to megabytes; one from elsewhere may claim anything.
MAX_META_PARQUET_BYTES = 256 << 20


def read_info(root: Path) -> dict:
    """``meta/info.json``, checked: version 3.x, fps, features with dtype and shape."""
    path = root / L.INFO_PATH
    if not path.is_file():
        raise FileNotFoundError(f'{path} not found: {root} is not a LeRobotDataset '
                                '(v3.0 keeps its description in meta/info.json)')
    info = read_json_object(path)
    version = info.get('codebase_version')
    try:
        major, _ = L.parse_version(version)
    except ValueError as e:
        raise ValueError(f'{path}: {e}') from None
    if major < 3:
        raise ValueError(
            f'{path}: codebase_version {version!r}; this reader reads LeRobotDataset v3.0. '
            f'A {version} dataset must be converted first with LeRobot\'s converter: '
            'python -m lerobot.scripts.convert_dataset_v21_to_v30 --repo-id=<repo>')
    if major > 3:
        raise ValueError(f'{path}: codebase_version {version!r} is newer than v3.0, the '
                         'version this reader understands')
    for field, kind in (('fps', (int, float)), ('features', dict), ('data_path', str),
                        ('total_frames', int)):
        if not isinstance(info.get(field), kind) or isinstance(info.get(field), bool):
            raise ValueError(f'{path}: field {field!r} missing or not a '
                             f'{getattr(kind, "__name__", "number")}')
    if not info['fps'] > 0:
        raise ValueError(f"{path}: field 'fps' must be positive, got {info['fps']}")
    for key, feature in info['features'].items():
        shape = feature.get('shape') if isinstance(feature, dict) else None
        if (not isinstance(feature, dict) or not isinstance(feature.get('dtype'), str)
                or not isinstance(shape, list) or not shape
                or not all(isinstance(n, int) and n > 0 for n in shape)):
            raise ValueError(f'{path}: features[{key!r}] needs a "dtype" string and a '
                             f'"shape" of positive integers, got {feature!r}')
    return info


def read_tasks(root: Path) -> dict[int, str]:
    """``meta/tasks.parquet``: task_index -> task string."""
    path = root / L.TASKS_PATH
    table = read_meta_parquet(path)
    if 'task_index' not in table.column_names:
        raise ValueError(f'{path}: no "task_index" column')
    # The task strings are the pandas index (a column named in the pandas metadata).
    pandas_meta = json.loads((table.schema.metadata or {}).get(b'pandas', b'{}'))
    names = [c for c in pandas_meta.get('index_columns', []) if isinstance(c, str)]
    names += ['task', '__index_level_0__']
    column = next((c for c in names if c in table.column_names), None)
    if column is None or not pa.types.is_string(table.schema.field(column).type):
        raise ValueError(f'{path}: no task string column (the pandas index, or "task")')
    tasks = {}
    for index, text in zip(table['task_index'].to_pylist(), table[column].to_pylist(),
                           strict=True):
        if index in tasks or not isinstance(text, str):
            raise ValueError(f'{path}: task_index {index} repeated or without a string')
        tasks[index] = text
    return tasks


def read_episodes(root: Path, info: dict, cameras: list[str]) -> dict[int, dict]:
    """``meta/episodes``: per episode the video file and start time of each video camera in
    ``cameras``, the parquet file that lists it, and its name (the episode_name column when
    kept, else its index)."""
    folder = root / L.EPISODES_DIR
    files = sorted(folder.glob('*/*.parquet'))
    if not files:
        raise FileNotFoundError(f'{folder}: no episodes parquet '
                                '(meta/episodes/chunk-XXX/file-XXX.parquet)')
    videos = [k for k in cameras if info['features'][k]['dtype'] == 'video']
    needed = ['episode_index', 'data/chunk_index', 'data/file_index']
    for key in videos:
        needed += [f'videos/{key}/chunk_index', f'videos/{key}/file_index',
                   f'videos/{key}/from_timestamp']
    episodes = {}
    for path in files:
        table = read_meta_parquet(path, lambda name: not name.startswith('stats/'))
        missing = [c for c in needed if c not in table.column_names]
        if missing:
            raise ValueError(f'{path}: missing column(s) {missing}')
        named = L.EPISODE_NAME in table.column_names
        for row in table.select(needed + ([L.EPISODE_NAME] if named else [])).to_pylist():
            index = row['episode_index']
            if index in episodes:
                raise ValueError(f'{path}: episode_index {index} appears twice')
            video = {}
            for key in videos:
                rel = L.relative_path(
                    info['video_path'], f'{root / L.INFO_PATH} video_path',
                    video_key=key, chunk_index=row[f'videos/{key}/chunk_index'],
                    file_index=row[f'videos/{key}/file_index'])
                video[key] = (root / rel, float(row[f'videos/{key}/from_timestamp']))
            name = row.get(L.EPISODE_NAME)
            episodes[index] = {'video': video, 'where': str(path),
                               'name': str(index) if name is None else name}
    return episodes


def read_meta_parquet(path: Path, columns=None) -> pa.Table:
    """A small metadata parquet file, refused when missing or implausibly large."""
    if not path.is_file():
        raise FileNotFoundError(f'{path} not found: a LeRobotDataset v3.0 needs it')
    size = path.stat().st_size
    if size > MAX_META_PARQUET_BYTES:
        raise ValueError(f'{path}: {size} bytes > {MAX_META_PARQUET_BYTES}; refusing to read it')
    try:
        names = pq.read_schema(path).names
        return pq.read_table(path, columns=[n for n in names if columns is None or columns(n)])
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f'{path}: not a readable parquet file ({e})') from e
