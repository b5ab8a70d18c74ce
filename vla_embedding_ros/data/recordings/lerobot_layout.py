"""The LeRobotDataset v3.0 on-disk layout, shared by ``lerobot_write`` and ``lerobot_read``.

``lerobot`` itself cannot be a dependency here (it needs Python >= 3.12), so its format is
written down once, in this module: paths, the feature schema of ``meta/info.json``, the Arrow
types LeRobot's loader casts parquet columns to, and the statistics it expects. Names and
defaults follow lerobot's ``datasets/utils.py`` (paths, chunk/file sizes),
``utils/constants.py`` (the five default features), ``datasets/feature_utils.py`` (feature ->
Arrow type), ``datasets/compute_stats.py`` (stat keys, quantiles) and ``datasets/io_utils.py``
(``tasks.parquet`` written by pandas with the task string as the index)::

    root/
      meta/info.json                                   format version, fps, features, counts
      meta/stats.json                                  per-feature statistics
      meta/tasks.parquet                               task string (pandas index) -> task_index
      meta/episodes/chunk-000/file-000.parquet         one row per episode
      meta/actions.yaml                                ours: the action library (LeRobot ignores it)
      data/chunk-XXX/file-XXX.parquet                  one row per frame
      videos/<camera key>/chunk-XXX/file-XXX.mp4       several episodes per file
"""
from __future__ import annotations

import json
from pathlib import PurePosixPath

import pyarrow as pa

CODEBASE_VERSION = 'v3.0'

INFO_PATH = 'meta/info.json'
STATS_PATH = 'meta/stats.json'
TASKS_PATH = 'meta/tasks.parquet'
EPISODES_DIR = 'meta/episodes'
# Our addition: the action library whose names ``LIBRARY_INDEX`` points into.
LIBRARY_PATH = 'meta/actions.yaml'
CHUNK_FILE = 'chunk-{chunk_index:03d}/file-{file_index:03d}'
EPISODES_PATH = EPISODES_DIR + '/' + CHUNK_FILE + '.parquet'
DATA_PATH = 'data/' + CHUNK_FILE + '.parquet'
VIDEO_PATH = 'videos/{video_key}/' + CHUNK_FILE + '.mp4'

# LeRobot's defaults: at most 1000 files per chunk folder; a new file once a parquet file
# would pass 100 MB or a video file 200 MB.
DEFAULT_CHUNKS_SIZE = 1000
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 200

ACTION = 'action'
# Deliberately not ``action.<something>``: LeRobot's ``dataset_to_policy_features`` treats
# every key starting with "action" as an action the policy must predict.
LIBRARY_INDEX = 'library_index'
SPLIT = 'split'
IMAGE_PREFIX = 'observation.images.'
# Ours, per frame: the time the writer was given (float64). ``timestamp`` itself is
# ``frame_index / fps``, the regular clock LeRobot's decoders find video frames by.
SOURCE_TIMESTAMP = 'source_timestamp'
# Ours, in the episodes parquet: the episode id the writer was given (int or str), as text.
EPISODE_NAME = 'episode_name'

# What LeRobot adds to every dataset (utils/constants.py DEFAULT_FEATURES), in its order.
DEFAULT_FEATURES = {
    'timestamp': {'dtype': 'float32', 'shape': [1], 'names': None},
    'frame_index': {'dtype': 'int64', 'shape': [1], 'names': None},
    'episode_index': {'dtype': 'int64', 'shape': [1], 'names': None},
    'index': {'dtype': 'int64', 'shape': [1], 'names': None},
    'task_index': {'dtype': 'int64', 'shape': [1], 'names': None},
}

# compute_stats.DEFAULT_QUANTILES and the keys LeRobot stores them under (q01 ... q99).
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f'q{round(q * 100):02d}' for q in QUANTILES)
STAT_KEYS = ('min', 'max', 'mean', 'std', 'count', *QUANTILE_KEYS)

# The Arrow type of a ``datasets.Image()`` column: PNG bytes plus the original file name.
IMAGE_STRUCT = pa.struct([('bytes', pa.binary()), ('path', pa.string())])
_NUMERIC = {'float32': pa.float32(), 'float64': pa.float64(), 'int64': pa.int64(),
            'int32': pa.int32(), 'int16': pa.int16(), 'int8': pa.int8(), 'uint8': pa.uint8(),
            'bool': pa.bool_(), 'string': pa.string()}


def camera_key(name: str) -> str:
    """``cam0`` -> ``observation.images.cam0``; a full key is returned as it is."""
    return name if name.startswith(IMAGE_PREFIX) else IMAGE_PREFIX + name


def next_chunk_file(chunk_index: int, file_index: int, chunks_size: int) -> tuple[int, int]:
    """The file after ``(chunk, file)``: the next file, or file 0 of the next chunk once a
    chunk holds ``chunks_size`` files (lerobot ``update_chunk_file_indices``)."""
    if file_index >= chunks_size - 1:
        return chunk_index + 1, 0
    return chunk_index, file_index + 1


def relative_path(template: str, where: str, **fields) -> str:
    """Fill a path template from ``info.json`` and refuse one that leaves the dataset folder.

    A dataset from elsewhere must not make the loader open files outside it, so an absolute
    path or a ``..`` part is an error naming ``where`` (the file and field it came from).
    """
    try:
        rel = template.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f'{where}: path template {template!r} cannot be filled ({e})') from e
    parts = PurePosixPath(rel.replace('\\', '/'))
    if not rel or parts.is_absolute() or '..' in parts.parts or ':' in rel:
        raise ValueError(f'{where}: path {rel!r} leaves the dataset folder')
    return rel


def arrow_type(feature: dict) -> pa.DataType | None:
    """The parquet column type LeRobot's loader casts a feature to (None: not in the parquet).

    feature_utils.get_hf_features_from_features: shape [1] is a scalar ``Value``, shape [D] a
    fixed-length ``Sequence`` (``fixed_size_list<...>[D]``), ``image`` an ``Image`` struct;
    ``video`` features live in the MP4 files only.
    """
    dtype = feature['dtype']
    if dtype == 'video':
        return None
    if dtype == 'image':
        return IMAGE_STRUCT
    value = _NUMERIC.get(dtype)
    if value is None:
        raise ValueError(f'feature dtype {dtype!r} is not one this reader knows')
    shape = list(feature['shape'])
    if shape == [1]:
        return value
    if len(shape) == 1:
        return pa.list_(value, shape[0])
    raise ValueError(f'feature shape {shape} is not [1] or [D]')


def _hf_feature(feature: dict) -> dict:
    """The ``datasets.Features`` JSON of one feature (as ``datasets`` writes it into parquet).

    ``Sequence`` is the pre-4.0 spelling; ``datasets`` 4 still reads it (as a ``List``).
    """
    if feature['dtype'] == 'image':
        return {'decode': True, '_type': 'Image'}
    value = {'dtype': feature['dtype'], '_type': 'Value'}
    if list(feature['shape']) == [1]:
        return value
    return {'feature': value, 'length': int(feature['shape'][0]), '_type': 'Sequence'}


def data_schema(features: dict) -> pa.Schema:
    """The schema of ``data/*.parquet`` for ``features`` (video features excluded), with the
    ``huggingface`` metadata ``datasets`` itself would write, so the Hub viewer shows images."""
    fields, hf = [], {}
    for key, feature in features.items():
        kind = arrow_type(feature)
        if kind is not None:
            fields.append(pa.field(key, kind))
            hf[key] = _hf_feature(feature)
    meta = {'huggingface': json.dumps({'info': {'features': hf}})}
    return pa.schema(fields, metadata=meta)


def tasks_table(tasks: list[str]) -> pa.Table:
    """``meta/tasks.parquet``: a ``task_index`` column and the task strings as the pandas index.

    LeRobot reads it with ``pd.read_parquet`` and looks tasks up by the index
    (``tasks.iloc[task_index].name``); without the pandas metadata the index would be a plain
    range and every lookup would come back wrong, silently. The metadata is what
    ``DataFrame.to_parquet`` writes for a string index named ``task``.
    """
    pandas_meta = {
        'index_columns': ['task'],
        'column_indexes': [{'name': None, 'field_name': None, 'pandas_type': 'unicode',
                            'numpy_type': 'object', 'metadata': {'encoding': 'UTF-8'}}],
        'columns': [
            {'name': 'task_index', 'field_name': 'task_index', 'pandas_type': 'int64',
             'numpy_type': 'int64', 'metadata': None},
            {'name': 'task', 'field_name': 'task', 'pandas_type': 'unicode',
             'numpy_type': 'object', 'metadata': None}],
        'creator': {'library': 'pyarrow', 'version': pa.__version__},
        'pandas_version': '2.2.3',
    }
    schema = pa.schema([('task_index', pa.int64()), ('task', pa.string())],
                       metadata={'pandas': json.dumps(pandas_meta)})
    return pa.table([pa.array(range(len(tasks)), pa.int64()), pa.array(tasks, pa.string())],
                    schema=schema)


def parse_version(text) -> tuple[int, int]:
    """``'v3.0'`` -> ``(3, 0)``; ValueError for anything else."""
    if not isinstance(text, str) or not text.startswith('v'):
        raise ValueError(f'codebase_version {text!r} is not of the form vMAJOR.MINOR')
    try:
        major, minor = text[1:].split('.')[:2]
        return int(major), int(minor)
    except ValueError:
        raise ValueError(f'codebase_version {text!r} is not of the form vMAJOR.MINOR') from None
