"""On-disk dataset format (JSONL + PNG), an atomic writer and a PyTorch loader.

A dataset is a directory::

    my_dataset/
      index.jsonl      one JSON object per line, one line per sample
      images/          PNG files (any names; the index refers to them)
      actions.yaml     optional action library (the ``actions.library`` YAML schema)

Each line of ``index.jsonl``::

    {"images": ["images/000000_0.png"],     # relative paths, one per camera, in camera order
     "instruction": "push the red ball to the left",
     "action": "push_left_r1_c2",            # library name; and/or:
     "action_vector": [0, 1, 0, 0, 0, 0.625, 0.375],
     "episode": 0,                           # id (int or str) grouping consecutive samples
     "timestamp": 0.0,                       # seconds within the episode
     "split": "train"}                       # optional

At least one of ``action`` and ``action_vector`` is required. PNGs are stored as ordinary
(BGR-on-disk) PNGs, so any image tool reads them with the right colours; the loader returns RGB.
Your own data (teleoperation logs, converted bags) fits the same format: write it with
``DatasetWriter`` or by hand. See ``FORMAT.md`` next to this module.
"""
from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath, PureWindowsPath

import cv2
import numpy as np
import torch.utils.data

from ..actions.library import ActionLibrary, as_library, load_library
from ..encoded_image import DEFAULT_MAX_PIXELS, EncodedImageError, decode_bounded
from ..files import StagedDirectory
from .tabletop.actions import PARAMETER_NAMES

INDEX = 'index.jsonl'
IMAGES = 'images'
LIBRARY = 'actions.yaml'
# Bounds on what a dataset may ask a loader to read: far above any real sample, far below
# what would exhaust a training machine (one index line, one image file on disk).
MAX_LINE_BYTES = 1 << 20
MAX_IMAGE_FILE_BYTES = 256 << 20


class BadSampleError(ValueError):
    """A sample whose index line or image file cannot be used; the message names it."""


def save_library(library, path: Path) -> None:
    """Store the action library a dataset writer was given (any form
    :func:`~vla_embedding_ros.actions.library.as_library` takes; a bare list of action dicts
    is in the tabletop layout, as ``build_action_library()`` returns it)."""
    as_library(library, PARAMETER_NAMES).to_yaml(path)


class DatasetWriter(StagedDirectory):
    """Write a dataset atomically (:class:`~vla_embedding_ros.files.StagedDirectory`): there is
    never a half dataset; ``close()`` (or leaving ``with``) moves it into place.

    Args:
        root: the dataset directory to create.
        library: optional action library to store as ``actions.yaml``, in any form
            :func:`~vla_embedding_ros.actions.library.as_library` takes (a bare list of
            action dicts is in the tabletop layout, as ``build_action_library()`` returns).
        overwrite: replace an existing ``root`` on close (otherwise FileExistsError).
    """

    def __init__(self, root: str | os.PathLike, library=None, overwrite: bool = False):
        super().__init__(root, overwrite)
        (self.tmp / IMAGES).mkdir()
        self._index = open(self.tmp / INDEX, 'w', encoding='utf-8')
        self.count = 0
        if library is not None:
            try:
                save_library(library, self.tmp / LIBRARY)
            except BaseException:
                self.abort()
                raise

    def add(self, images, instruction: str, action: str | None = None, action_vector=None,
            episode: int | str = 0, timestamp: float = 0.0, split: str | None = None,
            color: str = 'rgb', labels: dict | None = None) -> int:
        """Append one sample; ``images`` is one HxWx3 uint8 image or a list (one per camera).
        ``labels``: optional JSON-serialisable scene labels for training (``FORMAT.md``).

        Returns the sample's position in the index.
        """
        if self.closed:
            raise RuntimeError('DatasetWriter is closed')
        if action is None and action_vector is None:
            raise ValueError('a sample needs an action name, an action_vector or both')
        if color not in ('rgb', 'bgr'):
            raise ValueError(f"color must be 'rgb' or 'bgr', got {color!r}")
        cams = [images] if isinstance(images, np.ndarray) and images.ndim == 3 else list(images)
        paths = []
        for cam, image in enumerate(cams):
            image = np.asarray(image)
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f'camera {cam}: expected an HxWx3 uint8 image, got '
                                 f'{image.dtype} {image.shape}')
            rel = f'{IMAGES}/{self.count:06d}_{cam}.png'
            bgr = image[:, :, ::-1] if color == 'rgb' else image
            if not cv2.imwrite(str(self.tmp / rel), np.ascontiguousarray(bgr)):
                raise OSError(f'could not write {self.tmp / rel}')
            paths.append(rel)
        record = {'images': paths, 'instruction': str(instruction)}
        if action is not None:
            record['action'] = str(action)
        if action_vector is not None:
            record['action_vector'] = [float(v) for v in np.asarray(action_vector).ravel()]
        record.update(episode=episode, timestamp=float(timestamp))
        if split is not None:
            record['split'] = split
        if labels is not None:
            record['labels'] = labels
        self._index.write(json.dumps(record) + '\n')
        self.count += 1
        return self.count - 1

    def _finish(self) -> None:
        self._index.flush()
        os.fsync(self._index.fileno())
        self._index.close()

    def _drop(self) -> None:
        self._index.close()


def _dataset_library(library, root: Path) -> ActionLibrary | None:
    """The library a dataset's names index into: the one given, else the dataset's own."""
    if library is None:
        own = root / LIBRARY
        return load_library(own) if own.is_file() else None
    return as_library(library, PARAMETER_NAMES)


class JSONLDataset(torch.utils.data.Dataset):
    """Load a dataset directory; each item is a dict::

        images         uint8 array [C, H, W, 3], RGB, one per camera
        instruction    str
        action_index   int: position of ``action`` in the library, -1 if absent or unknown
        action_vector  float32 array: the record's vector, else the library's params for its
                       action, else empty
        action, episode (both str), timestamp (float)

    Args:
        root: dataset directory.
        library: action library for ``action_index`` (default: ``root/actions.yaml`` if present):
            a YAML path, a list of action dicts or names, or an ``ActionLibrary``.
        skip_bad: skip unusable samples instead of raising. Bad index lines and missing image
            files are dropped when the index is read; an image that exists but does not decode
            is found when loaded and replaced by the next good sample. ``num_bad`` and ``bad``
            ({location: reason}) count them (per process, with DataLoader workers).
        split: keep only records whose ``split`` field equals this.
        allow_external_images: accept image paths that leave the dataset directory (absolute,
            or through ``..``). Off by default: a dataset from elsewhere must not make the
            loader read arbitrary files of this machine.
        max_pixels: refuse images whose PNG/JPEG header declares more pixels (read before
            decoding; 0 = no bound).
    """

    def __init__(self, root: str | os.PathLike, library=None, skip_bad: bool = False,
                 split: str | None = None, allow_external_images: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.root = Path(root)
        self.skip_bad = skip_bad
        self.allow_external_images = allow_external_images
        self.max_pixels = max_pixels
        self.bad: dict[str, str] = {}
        library = _dataset_library(library, self.root)
        self.action_names = library.names if library is not None else []
        self._index = {n: i for i, n in enumerate(self.action_names)}
        self._params = ({a.name: a.params for a in library} if library is not None else {})
        index = self.root / INDEX
        if not index.is_file():
            raise FileNotFoundError(f'{index} not found: not a dataset directory')
        self.records = []
        with open(index, encoding='utf-8') as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    record = self._parse(line, f'{index}:{line_no}')
                    if record is not None and (split is None or record.get('split') == split):
                        self.records.append(record)

    @property
    def num_bad(self) -> int:
        """How many bad samples were skipped so far."""
        return len(self.bad)

    @property
    def skipped(self) -> int:
        """Alias of ``num_bad`` (the name the training sources read)."""
        return self.num_bad

    def _reject(self, where: str, reason: str, exc_type=BadSampleError):
        if not self.skip_bad:
            raise exc_type(f'{where}: {reason}')
        self.bad[where] = reason

    def _parse(self, line: str, where: str) -> dict | None:
        if len(line) > MAX_LINE_BYTES:
            return self._reject(where, f'index line of {len(line)} characters > '
                                       f'{MAX_LINE_BYTES}')
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            return self._reject(where, f'invalid JSON ({e})')
        if not isinstance(record, dict) or not isinstance(record.get('images'), list) \
                or not record['images'] or 'instruction' not in record:
            return self._reject(where, 'needs "images" (non-empty list) and "instruction"')
        if 'action' not in record and 'action_vector' not in record:
            return self._reject(where, 'needs "action" or "action_vector"')
        for rel in record['images']:
            problem = self._image_path_problem(rel)
            if problem:
                return self._reject(where, problem)
            if not (self.root / rel).is_file():
                return self._reject(str(self.root / rel), f'image file missing ({where})',
                                    FileNotFoundError)
        record['_where'] = where
        return record

    def _image_path_problem(self, rel) -> str:
        """Why an ``images`` entry may not be read ('' when it may)."""
        if not isinstance(rel, str) or not rel:
            return f'image path {rel!r} is not a non-empty string'
        if self.allow_external_images:
            return ''
        path = PurePosixPath(rel.replace('\\', '/'))
        if path.is_absolute() or PureWindowsPath(rel).is_absolute() or '..' in path.parts:
            return (f'image path {rel!r} leaves the dataset directory; datasets refer to '
                    'their own files (allow_external_images=True / data.allow_external_images '
                    'to accept it)')
        return ''

    def __len__(self) -> int:
        return len(self.records)

    def _read(self, path: Path) -> np.ndarray:
        try:
            size = path.stat().st_size
            if size > MAX_IMAGE_FILE_BYTES:
                raise BadSampleError(f'{path}: image file of {size} bytes > '
                                     f'{MAX_IMAGE_FILE_BYTES}')
            image = decode_bounded(np.fromfile(path, np.uint8), self.max_pixels)
        except OSError as e:
            raise BadSampleError(f'{path}: cannot read image ({e})') from e
        except EncodedImageError as e:
            raise BadSampleError(f'{path}: {e}') from e
        return image[:, :, ::-1]

    def _load(self, record: dict) -> dict:
        images = [self._read(self.root / rel) for rel in record['images']]
        if len({im.shape for im in images}) > 1:
            raise BadSampleError(f"{record['_where']}: cameras differ in size "
                                 f'{[im.shape for im in images]}')
        action = record.get('action') or ''
        # scene labels only where written (a None would break torch's default collate)
        labels = {'labels': record['labels']} if 'labels' in record else {}
        vector = record.get('action_vector')
        vector = (np.asarray(vector, np.float32) if vector is not None
                  else self._params.get(action, np.zeros(0, np.float32)))
        return {'images': np.ascontiguousarray(np.stack(images)),
                'instruction': record['instruction'],
                'action_index': self._index.get(action, -1),
                'action_vector': vector, 'action': action,
                'episode': str(record.get('episode', '')),
                'timestamp': float(record.get('timestamp', 0.0)), **labels}

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f'sample {i} out of range for {len(self)} samples')
        for k in range(len(self)):
            record = self.records[(i + k) % len(self)]
            try:
                return self._load(record)
            except BadSampleError as e:
                if not self.skip_bad:
                    raise
                self.bad[record['_where']] = str(e)
        raise BadSampleError(f'{self.root}: no readable sample left')
