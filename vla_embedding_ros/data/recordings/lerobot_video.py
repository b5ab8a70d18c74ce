"""MP4 video for LeRobot v3 datasets with PyAV only: AV1 encoding with exact frame times, and
decoding the frame at a given time (random access for training).

Encoding follows LeRobot's defaults (``configs/video.py``: libsvtav1, yuv420p, GOP 2, CRF 30,
preset 12). Every frame is given its presentation time on a fine clock: 90 kHz (the MPEG
clock) rounded up to a multiple of a whole-number frame rate, so the writer's frames at
``k / fps`` (LeRobot's timing, which its torchcodec decoder needs) are exact, and the reader
also finds frames at any other times (exports older than ``source_timestamp``).

Decoding seeks to the key frame at or before the wanted time and decodes forward; a GOP of 2
makes that at most two frames. Readers stay open (an LRU of containers per process, reopened
after a fork) and keep decoding forward when the next request is a little later in the same
file, which is what sequential access and multi-camera reads do.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict, deque
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .thread_scheduling import keeping_thread_scheduling

# LeRobot's RGB encoder defaults (lerobot/configs/video.py VideoEncoderConfig).
CODEC = 'libsvtav1'
PIX_FMT = 'yuv420p'
GOP = 2
CRF = 30
PRESET = 12
BASE_TICKS = 90_000
# Keep decoding forward (instead of seeking) when the wanted frame is at most this much later
# than the last decoded one: a seek costs a key frame plus up to GOP-1 frames anyway.
FORWARD_WINDOW_S = 0.25


class VideoFrameError(ValueError):
    """A frame that cannot be had: no frame within tolerance, or an undecodable file."""


def ticks_per_second(fps: float | None) -> int:
    """The video clock: 90 kHz, rounded up to a multiple of an integer ``fps`` when given."""
    if fps is None or fps <= 0 or abs(fps - round(fps)) > 1e-9:
        return BASE_TICKS
    fps = round(fps)
    return fps * math.ceil(BASE_TICKS / fps)


class VideoEncoder:
    """Encode RGB frames into one MP4 file, each at the presentation time it is given.

    Args:
        path: the ``.mp4`` to write.
        width, height: frame size (every frame must have it).
        ticks: clock rate; ``pts`` passed to ``write`` count these.
        rate: nominal frame rate for the encoder's rate control (any positive number).
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, ticks: int,
                 rate: float, crf: int = CRF, gop: int = GOP, preset: int = PRESET):
        # SVT-AV1 prints a banner to stderr for every encoder unless told otherwise; its own
        # variable, read when the library first logs. setdefault leaves a user's choice alone.
        os.environ.setdefault('SVT_LOG', '1')
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.time_base = Fraction(1, int(ticks))
        self.bytes = 0
        self.frames = 0
        self._last_pts = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), 'w')
        try:
            options = {'g': str(gop), 'crf': str(crf), 'preset': str(preset),
                       'svtav1-params': 'fast-decode=0'}
            rate = Fraction(rate).limit_denominator(1001) if rate > 0 else Fraction(30)
            self._stream = self._container.add_stream(CODEC, rate=rate, options=options)
            self._stream.pix_fmt = PIX_FMT
            self._stream.width, self._stream.height = self.width, self.height
            self._stream.time_base = self.time_base
            self._stream.codec_context.time_base = self.time_base
        except BaseException:
            self._container.close()
            raise

    def write(self, rgb: np.ndarray, pts: int) -> None:
        """Encode one HxWx3 uint8 RGB frame shown at ``pts`` ticks (strictly increasing)."""
        if rgb.shape != (self.height, self.width, 3):
            raise ValueError(f'{self.path}: frame of shape {rgb.shape}, the video is '
                             f'{self.height}x{self.width}x3')
        if self._last_pts is not None and pts <= self._last_pts:
            raise ValueError(f'{self.path}: frame time {pts} ticks is not after the previous '
                             f'{self._last_pts}')
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format='rgb24')
        frame.pts = int(pts)
        frame.time_base = self.time_base
        try:
            if self._stream.codec_context.is_open:
                packets = self._stream.encode(frame)
            else:   # this call opens SVT-AV1, which makes the thread real-time when it may
                with keeping_thread_scheduling():
                    packets = self._stream.encode(frame)
        except av.FFmpegError as e:
            raise ValueError(f'{self.path}: the {CODEC} encoder refused a '
                             f'{self.width}x{self.height} frame ({e})') from e
        self._mux(packets)
        self._last_pts = int(pts)
        self.frames += 1

    def _mux(self, packets) -> None:
        for packet in packets:
            self.bytes += packet.size
            self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        if self._container is None:
            return
        try:
            with keeping_thread_scheduling():   # an encoder with no frame yet opens here
                packets = self._stream.encode()
            self._mux(packets)
        finally:
            self._container.close()
            self._container = None

    def abort(self) -> None:
        """Close without caring whether the file is complete (it is about to be deleted).

        The encoder is still drained: SVT-AV1 complains on stderr when it is not.
        """
        if self._container is not None:
            try:
                with keeping_thread_scheduling():
                    self._stream.encode()
                self._container.close()
            except (av.FFmpegError, OSError):
                pass
            self._container = None


def _decoder(stream):
    """The codec context to decode ``stream`` with.

    FFmpeg's native ``av1`` decoder only drives hardware; builds that register it before
    libdav1d would hand it to AV1 streams and fail on CPU. Decoding AV1 with libdav1d always
    (PyAV wheels bundle it) makes that independent of the build.
    """
    ctx = stream.codec_context
    if ctx.codec.name == 'av1' and 'libdav1d' in av.codecs_available:
        own = av.CodecContext.create('libdav1d', 'r')
        own.extradata = ctx.extradata
        return own
    return ctx


class VideoReader:
    """One open MP4 file, read by presentation time.

    Args:
        path: the video file.
        max_pixels: refuse a stream declaring more pixels per frame (0 = no bound).
    """

    def __init__(self, path: str | os.PathLike, max_pixels: int = 0):
        self.path = Path(path)
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError) as e:
            raise VideoFrameError(f'{self.path}: cannot open video ({e})') from e
        try:
            if not self._container.streams.video:
                raise VideoFrameError(f'{self.path}: no video stream')
            self._stream = self._container.streams.video[0]
            pixels = self._stream.width * self._stream.height
            if max_pixels and pixels > max_pixels:
                raise VideoFrameError(f'{self.path}: video declares {self._stream.width}x'
                                      f'{self._stream.height} = {pixels} pixels > {max_pixels}')
            self._ctx = _decoder(self._stream)
            self._time_base = self._stream.time_base
        except BaseException:
            self._container.close()
            raise
        self._frames = None        # generator of (time, frame) after the last seek
        self._last_time = None     # time of the newest frame it gave
        self._recent = deque(maxlen=4)

    def _decode_from(self, seconds: float):
        """Seek to the key frame at or before ``seconds``; yield (time, frame) from there."""
        target = math.floor(seconds / self._time_base)
        self._container.seek(max(target, 0), stream=self._stream, backward=True,
                             any_frame=False)
        if self._ctx is not self._stream.codec_context:
            self._ctx.flush_buffers()   # container.seek flushes only the stream's own context
        for packet in self._container.demux(self._stream):
            for frame in self._ctx.decode(packet):
                if frame.pts is not None:
                    yield float(frame.pts * self._time_base), frame

    def frame_at(self, seconds: float, tolerance: float) -> np.ndarray:
        """The RGB frame (HxWx3 uint8) shown at ``seconds``, within ``tolerance`` seconds.

        Raises:
            VideoFrameError: no frame that close, or the file cannot be decoded; the message
                names the file, the time asked for and the nearest times found.
        """
        try:
            return self._find(seconds, tolerance).to_ndarray(format='rgb24')
        except av.FFmpegError as e:
            self._frames = None
            raise VideoFrameError(f'{self.path}: cannot decode at t={seconds:.6f}s ({e})') from e

    def _find(self, seconds: float, tolerance: float):
        # Frames are at least one tick apart, so one within half a tick is the nearest; one
        # farther away (still within tolerance) is the nearest only once its neighbour on the
        # far side of ``seconds`` is known. ``_recent`` holds consecutive frames, in order.
        half_tick = float(self._time_base) / 2
        recent = list(self._recent)
        near = [(abs(t - seconds), p) for p, (t, _) in enumerate(recent)
                if abs(t - seconds) <= tolerance]
        best = None   # (distance, frame) of the nearest frame within tolerance so far
        if near:
            dist, p = min(near)
            neighbour = p + 1 < len(recent) if recent[p][0] < seconds else p > 0
            if dist <= half_tick or neighbour:
                return recent[p][1]
            best = (dist, recent[p][1])
        ahead = (self._frames is not None and self._last_time is not None
                 and self._last_time < seconds <= self._last_time + FORWARD_WINDOW_S)
        if not ahead:
            self._recent.clear()
            self._frames = self._decode_from(seconds - tolerance)
            self._last_time, best = None, None
        before = None
        for t, frame in self._frames:
            self._recent.append((t, frame))
            self._last_time = t
            dist = abs(t - seconds)
            if dist <= tolerance and (best is None or dist < best[0]):
                best = (dist, frame)
                if dist <= half_tick or t >= seconds:
                    return frame
                continue
            if best is not None:
                return best[1]
            if t < seconds:
                before = t
                continue
            raise VideoFrameError(f'{self.path}: no frame within {tolerance}s of '
                                  f't={seconds:.6f}s (nearest: {before} and {t:.6f}s)')
        self._frames = None
        if best is not None:
            return best[1]
        raise VideoFrameError(f'{self.path}: no frame within {tolerance}s of t={seconds:.6f}s '
                              f'(the video ends at {self._last_time})')

    def close(self) -> None:
        self._frames = None
        self._recent.clear()
        self._container.close()


class VideoReaderCache:
    """At most ``max_open`` open ``VideoReader``s, least recently used closed first.

    Open containers do not survive pickling or a fork (DataLoader workers): a copy starts
    empty, and a cache used in a new process drops what its parent had opened.
    """

    def __init__(self, max_open: int = 16, max_pixels: int = 0):
        self.max_open = max(1, int(max_open))
        self.max_pixels = max_pixels
        self._readers: OrderedDict[str, VideoReader] = OrderedDict()
        self._pid = os.getpid()

    def frame_at(self, path: str | os.PathLike, seconds: float, tolerance: float) -> np.ndarray:
        """The RGB frame of ``path`` at ``seconds`` (see ``VideoReader.frame_at``)."""
        if self._pid != os.getpid():   # forked: the parent's decoders are not ours to use
            self._readers, self._pid = OrderedDict(), os.getpid()
        key = str(path)
        reader = self._readers.pop(key, None)
        if reader is None:
            reader = VideoReader(path, self.max_pixels)
            while len(self._readers) >= self.max_open:
                self._readers.popitem(last=False)[1].close()
        self._readers[key] = reader
        return reader.frame_at(seconds, tolerance)

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def __getstate__(self) -> dict:
        return {'max_open': self.max_open, 'max_pixels': self.max_pixels}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)
