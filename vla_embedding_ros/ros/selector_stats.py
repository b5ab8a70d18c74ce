"""Counters of the action_selector node, their /diagnostics status, and a log limiter.

Subscription callbacks, the inference thread and the diagnostics timer all touch these, so
every update goes through one lock; the snapshot is what diagnostics and tests read.
Bad input (``rejected``, by kind) is kept apart from faults of the node itself (``errors``):
a flood of malformed frames is the publisher's problem, an inference exception is ours.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue


def percentile(values, q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``; NaN when empty."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else \
        float('nan')


class SelectorStats:
    """Thread-safe counters: frames, decisions, abstentions, latencies, errors by kind."""

    def __init__(self, latency_window: int = 1000):
        self._lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.dropped = 0        # overwritten in the slot before the worker took them
        self.stale = 0          # older than max_image_age_s
        self.ignored = 0        # on_instruction mode: no pending instruction
        self.decisions = 0
        self.abstentions = 0
        self.last_abstain_reason = ''
        self.last_abstained = False
        self.last_skip_reason = ''
        self.warned_skips = 0   # skips that mean something is wrong (stale, clock mismatch)
        self.last_warned_skip = ''
        self.incompatible_qos = 0
        self.errors: Counter[str] = Counter()
        self.last_error = ''
        self.rejected: Counter[str] = Counter()   # bad input by kind (image_layout, ...)
        self.last_rejection = ''
        self.latency_ms: deque[float] = deque(maxlen=latency_window)
        # missing_camera: decisions made without a camera, per camera topic; the cameras the
        # last decision was missing (empty when it had all of them)
        self.decided_without: Counter[str] = Counter()
        self.missing_cameras: list[str] = []
        self.last_frame_time: float | None = None
        self._errors_reported = 0
        self._rejected_reported = 0
        self._warned_skips_reported = 0

    def count(self, field: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, field, getattr(self, field) + n)
            if field == 'received':
                self.last_frame_time = time.monotonic()

    def skip(self, field: str, reason: str, warn: bool = False) -> None:
        """Count a frame skipped without a decision; ``warn``: one that signals a fault the
        user must fix (a stale stamp, a clock mismatch), so /diagnostics turns WARN."""
        with self._lock:
            setattr(self, field, getattr(self, field) + 1)
            self.last_skip_reason = reason
            if warn:
                self.warned_skips += 1
                self.last_warned_skip = reason

    def error(self, kind: str, message: str) -> None:
        with self._lock:
            self.errors[kind] += 1
            self.last_error = f'{kind}: {message}'

    def reject(self, kind: str, message: str) -> None:
        with self._lock:
            self.rejected[kind] += 1
            self.last_rejection = f'{kind}: {message}'

    def decided(self, abstained: bool, reason: str, latency_ms: float) -> None:
        with self._lock:
            self.processed += 1
            self.latency_ms.append(latency_ms)
            self.last_abstained = abstained
            if abstained:
                self.abstentions += 1
                self.last_abstain_reason = reason
            else:
                self.decisions += 1

    def cameras_missing(self, missing: list[str], decided: bool) -> None:
        """The cameras a decision (or abstention) was missing; ``decided``: it decided
        without them (missing_camera: decide), counted per camera."""
        with self._lock:
            self.missing_cameras = list(missing)
            if decided:
                self.decided_without.update(missing)

    def snapshot(self) -> dict:
        """A consistent copy of every counter (latency as p50/p99 in ms)."""
        with self._lock:
            lat = list(self.latency_ms)
            return {
                'frames_received': self.received, 'frames_processed': self.processed,
                'frames_dropped': self.dropped, 'frames_stale': self.stale,
                'frames_ignored': self.ignored, 'decisions': self.decisions,
                'abstentions': self.abstentions,
                'last_abstain_reason': self.last_abstain_reason,
                'last_abstained': self.last_abstained,
                'last_skip_reason': self.last_skip_reason,
                'last_warned_skip': self.last_warned_skip,
                'incompatible_qos': self.incompatible_qos,
                'errors': dict(self.errors), 'last_error': self.last_error,
                'rejected': dict(self.rejected), 'last_rejection': self.last_rejection,
                'missing_cameras': ', '.join(self.missing_cameras),
                'decisions_without_camera': dict(self.decided_without),
                'latency_p50_ms': percentile(lat, 50), 'latency_p99_ms': percentile(lat, 99),
                'seconds_since_frame': (time.monotonic() - self.last_frame_time
                                        if self.last_frame_time is not None else None),
            }

    def diagnostics(self, name: str, hardware_id: str, stamp, state: str,
                    extra: dict | None = None) -> DiagnosticArray:
        """A DiagnosticArray with one status: OK, or WARN with the reasons in the message."""
        snap = self.snapshot()
        with self._lock:
            new_errors = sum(self.errors.values()) - self._errors_reported
            self._errors_reported += new_errors
            new_rejected = sum(self.rejected.values()) - self._rejected_reported
            self._rejected_reported += new_rejected
            new_warned = self.warned_skips - self._warned_skips_reported
            self._warned_skips_reported = self.warned_skips
            last_warned = self.last_warned_skip
        problems = []
        if state != 'active':
            problems.append(f'node is {state}')
        if snap['seconds_since_frame'] is None:
            problems.append('no frames received yet')
        elif snap['seconds_since_frame'] > 5.0:
            problems.append(f'no frame for {snap["seconds_since_frame"]:.1f} s')
        if snap['incompatible_qos']:
            problems.append(f'{snap["incompatible_qos"]} incompatible QoS event(s)')
        if new_errors:
            problems.append(f'{new_errors} new error(s), last: {snap["last_error"]}')
        if new_warned:
            problems.append(f'{new_warned} frame(s) skipped without a decision, last: '
                            f'{last_warned}')
        if new_rejected:
            problems.append(f'{new_rejected} input(s) rejected, last: {snap["last_rejection"]}')
        if snap['last_abstained']:
            problems.append(f'abstaining: {snap["last_abstain_reason"]}')
        elif snap['missing_cameras']:
            problems.append(f'deciding without camera(s) {snap["missing_cameras"]} '
                            '(missing_camera: decide)')
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if problems else DiagnosticStatus.OK,
            name=name, hardware_id=hardware_id,
            message='; '.join(problems) if problems else 'selecting actions')
        values = dict(snap)
        values.update(extra or {})
        status.values = [KeyValue(key=k, value=_fmt(v)) for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = stamp
        array.status = [status]
        return array


def _fmt(value) -> str:
    if isinstance(value, float):
        return f'{value:.3f}'
    if isinstance(value, dict):
        return ', '.join(f'{k}={v}' for k, v in sorted(value.items())) or 'none'
    return str(value)


class LogLimiter:
    """At most one log line per kind per ``period`` seconds, with the count it held back.

    rclpy's ``throttle_duration_sec`` throttles per call site, so one shared ``_reject`` call
    would let a flood of one kind hide the first report of another; this keys on the kind.
    """

    def __init__(self, period: float = 5.0):
        self.period = period
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def allow(self, kind: str, period: float | None = None) -> tuple[bool, int]:
        """Whether to log ``kind`` now, and how many of it were held back since its last line.
        ``period`` overrides the default for this kind (routine events log more rarely)."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < (self.period if period is None else period):
                self._held[kind] += 1
                return False, 0
            self._last[kind] = now
            held, self._held[kind] = self._held[kind], 0
            return True, held

    def log(self, logger, kind: str, text: str, level: str, period: float | None = None) -> None:
        """Log ``text`` at ``level`` (info, warning, error) on ``logger`` if :meth:`allow`
        lets ``kind`` through now, with the count held back since its last line."""
        allowed, held = self.allow(kind, period)
        if not allowed:
            return
        text += f' [{held} more since the last report]' if held else ''
        # One call site per severity: rclpy's logger refuses a call site whose severity
        # changes between calls (it caches per file:line), so no getattr(logger, level).
        if level == 'info':
            logger.info(text)
        elif level == 'warning':
            logger.warning(text)
        else:
            logger.error(text)


class FrameWatch:
    """Says when an active node has had no frame on a camera for ``after_s`` seconds (since
    activation or since that camera's last frame), at most once per ``period_s`` while it lasts.

    A selector listening on the wrong topic otherwise waits in silence: the decisions need the
    first camera's frames, and nothing else would tell the user none arrive. Times are
    monotonic receive times (sim time plays no part). Thread-safe: the image callbacks report
    frames, a timer asks :meth:`due`.
    """

    def __init__(self, after_s: float = 5.0, period_s: float = 10.0):
        self.after_s, self.period_s = after_s, period_s
        self._lock = threading.Lock()
        self._last: list[float] = []     # per camera: its last frame, or the activation
        self._seen: list[bool] = []      # per camera: a frame arrived since the activation
        self._reported: float | None = None

    def start(self, cameras: int, now: float) -> None:
        """The node became active with ``cameras`` cameras at ``now``."""
        with self._lock:
            self._last, self._seen, self._reported = [now] * cameras, [False] * cameras, None

    def stop(self) -> None:
        with self._lock:
            self._last, self._seen = [], []

    def frame(self, camera: int, now: float) -> None:
        with self._lock:
            if camera < len(self._last):
                self._last[camera], self._seen[camera] = now, True

    def silent(self, now: float) -> list[tuple[int, float, bool]]:
        """(camera, seconds without a frame, whether it sent one since the activation) for
        every camera silent for ``after_s`` or longer."""
        with self._lock:
            pairs = enumerate(zip(self._last, self._seen, strict=True))
            return [(i, now - last, seen) for i, (last, seen) in pairs
                    if now - last >= self.after_s]

    def due(self, now: float) -> list[tuple[int, float, bool]]:
        """:meth:`silent` when a report is due (the first one, then every ``period_s``); else
        []. Once every camera sends again, the next silence is reported after ``after_s``."""
        silent = self.silent(now)
        with self._lock:
            if not silent:
                self._reported = None
                return []
            if self._reported is not None and now - self._reported < self.period_s:
                return []
            self._reported = now
        return silent


def no_frame_message(silent: list[tuple[int, float, bool]], topics: list[str],
                     publishers: list[int]) -> str:
    """The warning for :meth:`FrameWatch.due`: each silent camera's resolved topic, for how
    long, how many publishers it has and what to check."""
    parts = []
    for camera, seconds, seen in silent:
        since = 'since the last one' if seen else 'since activation'
        count = publishers[camera]
        hint = ('no publisher there: remap the camera topic (e.g. -r image:=/camera/image_raw '
                'for tabletop_sim) or set image_topics' if not count else
                f'{count} publisher(s) there, yet nothing arrives: check its message type '
                '(image_transport), its QoS, and for large raw frames the DDS transport '
                '(vla-dds-profile)')
        parts.append(f'{topics[camera]} for {seconds:.0f} s ({since}; {hint})')
    first = any(camera == 0 for camera, _, _ in silent)
    return ('no frame received on ' + '; on '.join(parts)
            + ('. No decision is made without the first camera\'s frames' if first else ''))
