"""Pairing policy: which camera frames and which instruction belong to each action.

All times are integer nanoseconds on one clock (header stamps or bag receive times, as the
importer chose). For an action at time ``t``:

* each camera contributes its **newest frame with stamp <= t**, and only if ``t - stamp`` is
  at most the tolerance; a frame stamped after the action is never used, even when closer,
  because the robot could not have seen it when it acted;
* the instruction is the **newest instruction with stamp <= t** (it stays in force until the
  next one arrives; there is no tolerance on it);
* otherwise the action is skipped with a reason, checked in this order: a bad action payload,
  ``no instruction yet``, ``no frame within tolerance for camera <topic>`` (first camera that
  fails, in the order the cameras were given).

Each timeline is sorted by stamp (ties keep bag order, so the later message counts as newer),
so out-of-order stamps in the bag do not matter.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NO_INSTRUCTION = 'no instruction yet'


def no_frame_reason(topic: str) -> str:
    """Skip reason of an action with no usable frame on camera ``topic``."""
    return f'no frame within tolerance for camera {topic}'


class Timeline:
    """Messages of one topic sorted by stamp; ``ids`` are their positions in bag order."""

    def __init__(self, stamps, ids=None):
        stamps = np.asarray(stamps, np.int64).reshape(-1)
        ids = np.arange(len(stamps)) if ids is None else np.asarray(ids, np.int64)
        order = np.lexsort((ids, stamps))
        self.stamps, self.ids = stamps[order], ids[order]

    def __len__(self) -> int:
        return len(self.stamps)

    def newest_at_or_before(self, t: int) -> int:
        """Position (in sorted order) of the newest entry with stamp <= t, or -1."""
        return int(np.searchsorted(self.stamps, t, side='right')) - 1


@dataclass
class Pairing:
    """One matched action: its frames (bag-order id per camera) and instruction position."""

    action: int                  # action id (bag order)
    stamp: int                   # action time (ns)
    frames: list[int]            # per camera, the frame id in that camera's bag order
    frame_ages: list[int]        # per camera, t - frame stamp (ns)
    instruction: int             # instruction id (bag order)


@dataclass
class PairingResult:
    matched: list[Pairing] = field(default_factory=list)
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (action id, reason, detail)


def pair_actions(actions: Timeline, cameras: dict[str, Timeline], instructions: Timeline,
                 tolerance_ns: int, payload_errors: dict[int, str] | None = None
                 ) -> PairingResult:
    """Apply the pairing policy to every action, in stamp order.

    Args:
        actions: action stamps (ids = action ids).
        cameras: camera topic -> frame timeline, in camera order.
        instructions: instruction stamps (ids = instruction ids).
        tolerance_ns: the largest allowed ``action time - frame stamp``.
        payload_errors: action id -> reason for actions whose payload is unusable.
    """
    payload_errors = payload_errors or {}
    result = PairingResult()
    for t, action in zip(actions.stamps.tolist(), actions.ids.tolist(), strict=True):
        when = f't={t / 1e9:.6f}s'
        if action in payload_errors:
            result.skipped.append((action, payload_errors[action], when))
            continue
        k = instructions.newest_at_or_before(t)
        if k < 0:
            first = (f'first instruction at {instructions.stamps[0] / 1e9:.6f}s'
                     if len(instructions) else 'no instruction in the bag')
            result.skipped.append((action, NO_INSTRUCTION, f'{when}, {first}'))
            continue
        frames, ages, failed = [], [], None
        for topic, timeline in cameras.items():
            i = timeline.newest_at_or_before(t)
            age = t - int(timeline.stamps[i]) if i >= 0 else None
            if age is None or age > tolerance_ns:
                newest = ('none at or before it' if age is None
                          else f'newest is {age / 1e9:.3f}s old')
                failed = (no_frame_reason(topic), f'{when}, {newest}')
                break
            frames.append(int(timeline.ids[i]))
            ages.append(age)
        if failed:
            result.skipped.append((action, *failed))
            continue
        result.matched.append(Pairing(action, t, frames, ages, int(instructions.ids[k])))
    return result
