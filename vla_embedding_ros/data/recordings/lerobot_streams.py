"""The output streams of ``LeRobotWriter`` (``lerobot_write``): the episode being written
(its rows until they go to parquet, its histograms), the data parquet files rolled over between
episodes, and one camera's video files (AV1, constant frame rate, episodes back to back).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import lerobot_layout as L
from .lerobot_video import VideoEncoder


class EpisodeRows:
    """The episode being written: its rows not yet in parquet, and what its stats need."""

    def __init__(self, key, episode, index: int, first: int, schema: pa.Schema, cameras: int):
        self.key, self.id, self.index, self.first = key, episode, index, first
        self.schema = schema
        self.length = 0
        self.tasks: list[str] = []
        self.splits: set = set()
        self.values = {name: [] for name in (L.ACTION, L.LIBRARY_INDEX, L.SOURCE_TIMESTAMP,
                                             'timestamp',
                                             'frame_index', 'episode_index', 'index',
                                             'task_index')}
        self.histograms = [np.zeros((3, 256), np.int64) for _ in range(cameras)]
        self.rows = {name: [] for name in schema.names}
        self.row_bytes = 0

    def take_rows(self) -> pa.Table | None:
        """The buffered rows as a table (None when there are none); the buffer is emptied."""
        if not self.rows[L.ACTION]:
            return None
        arrays = []
        for field in self.schema:
            values = self.rows[field.name]
            if field.name == L.ACTION:
                flat = pa.array(np.concatenate(values), pa.float32())
                arrays.append(pa.FixedSizeListArray.from_arrays(flat, field.type.list_size))
            else:
                arrays.append(pa.array(values, field.type))
        self.rows = {name: [] for name in self.schema.names}
        self.row_bytes = 0
        return pa.Table.from_arrays(arrays, schema=self.schema)


class DataFiles:
    """The data parquet files: one open ``ParquetWriter``, rolled over between episodes."""

    def __init__(self, root: Path, chunks_size: int, limit_mb: float):
        self.root, self.chunks_size, self.limit = root, chunks_size, limit_mb * 2**20
        self.chunk = self.file = 0
        self.writer = None
        self.bytes = 0            # Arrow bytes written to the current file
        self.episode_bytes = 0    # ... by the last (or current) episode

    def start_episode(self) -> None:
        if self.writer is not None and self.bytes + self.episode_bytes >= self.limit:
            self.writer.close()
            self.writer, self.bytes = None, 0
            self.chunk, self.file = L.next_chunk_file(self.chunk, self.file, self.chunks_size)
        self.episode_bytes = 0

    def write(self, table: pa.Table | None) -> None:
        if table is None:
            return
        if self.writer is None:
            path = self.root / L.DATA_PATH.format(chunk_index=self.chunk, file_index=self.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(path, table.schema, compression='snappy',
                                           use_dictionary=True)
        self.writer.write_table(table)
        self.bytes += table.nbytes
        self.episode_bytes += table.nbytes

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def abort(self) -> None:
        try:
            self.close()
        except (OSError, pa.ArrowException):
            self.writer = None


class VideoTrack:
    """One camera's video files: the open encoder, and where its episodes start and end.

    Frames follow each other at exactly 1/fps (frame n of a file at n / fps), episodes back
    to back, as LeRobot writes them: a constant-frame-rate file whose average rate is fps.
    """

    def __init__(self, root: Path, key: str, width: int, height: int, ticks: int, fps: float,
                 limit_bytes: float, chunks_size: int, crf: int):
        self.root, self.key, self.width, self.height = root, key, width, height
        self.ticks, self.fps, self.limit, self.chunks_size = ticks, fps, limit_bytes, chunks_size
        self.crf = crf
        self.chunk = self.file = 0
        self.encoder: VideoEncoder | None = None
        self.frames = 0           # frames in the current file
        self.first = 0            # the current episode's first frame in the file
        self.episode_bytes = 0
        self._bytes_at_start = 0

    def start_episode(self) -> None:
        if self.encoder is not None and self.encoder.bytes + self.episode_bytes >= self.limit:
            self.encoder.close()
            self.encoder, self.frames = None, 0
            self.chunk, self.file = L.next_chunk_file(self.chunk, self.file, self.chunks_size)
        if self.encoder is None:
            path = self.root / L.VIDEO_PATH.format(video_key=self.key, chunk_index=self.chunk,
                                                   file_index=self.file)
            self.encoder = VideoEncoder(path, self.width, self.height, self.ticks, self.fps,
                                        crf=self.crf)
        self.first = self.frames
        self._bytes_at_start = self.encoder.bytes

    def write(self, frame: np.ndarray) -> None:
        # Exact for a whole-number fps (the clock is a multiple of it); otherwise within
        # half a tick of n / fps, far inside LeRobot's 0.1 ms tolerance.
        self.encoder.write(frame, round(self.frames * self.ticks / self.fps))
        self.frames += 1

    def finish_episode(self) -> dict:
        self.episode_bytes = self.encoder.bytes - self._bytes_at_start
        prefix = f'videos/{self.key}/'
        return {prefix + 'chunk_index': self.chunk, prefix + 'file_index': self.file,
                prefix + 'from_timestamp': self.first / self.fps,
                prefix + 'to_timestamp': self.frames / self.fps}

    def close(self) -> None:
        if self.encoder is not None:
            self.encoder.close()
            self.encoder = None

    def abort(self) -> None:
        if self.encoder is not None:
            self.encoder.abort()
            self.encoder = None
