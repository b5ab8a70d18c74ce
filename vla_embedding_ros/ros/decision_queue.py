"""When the action_selector decides, and on what: its inputs' newest state and the rules that
turn it into the next decision (a :class:`Job`) or a frame skipped with a reason (a
:class:`Skip`). ROS-free, so the rules are tested without spinning anything.

Subscription callbacks store the newest frame per camera, the instruction and the candidates
here; the inference thread waits in :meth:`DecisionQueue.next` for the next job. One lock
guards it all, so a job is always one consistent snapshot; :meth:`DecisionQueue.take` is the
rule itself, without the lock or the waiting.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

# An instruction still undecided this long after it arrived, with frames coming in stamped
# before it, means the camera's clock is behind the node's (not a frame in flight).
CLOCK_MISMATCH_AFTER_S = 1.0
# How many instruction samples to remember: the same sample arrives through both instruction
# subscriptions (latched and volatile) and must be decided on once.
RECENT_INSTRUCTIONS = 32


@dataclass
class Slot:
    """The newest frame of one camera."""

    msg: object = None
    fresh: bool = False         # not yet used by a decision
    received_at: float = 0.0    # time.monotonic() when the callback stored it
    stamp_ns: int = 0           # the frame's header stamp


@dataclass
class Job:
    """One decision to make: every camera's newest frame and the state it is judged in."""

    msgs: list                  # per camera, its newest message (None: none yet)
    instruction: str | None
    instruction_seq: int
    candidates: np.ndarray | None
    received_at: float = field(default_factory=time.monotonic)   # the trigger frame's
    received: list = field(default_factory=list)   # each camera's newest frame's arrival
    missing: list = field(default_factory=list)    # camera topics missing in this decision
    choice: str | None = None     # the option the space's choice is pinned to (action_choice)


@dataclass(frozen=True)
class Skip:
    """A frame taken without a decision. ``kind`` names it for the log limiter (ignored,
    ignored_in_flight, clock_mismatch, stale); ``counter`` is the frames_* counter it counts
    in (ignored, stale); ``reason`` goes to the counters, ``message`` to the log. ``remedy``:
    a clock fault the user must fix, and the switch that turns the check off (the log adds
    :func:`clock_advice`); ``routine``: expected, logged more rarely."""

    kind: str
    reason: str
    message: str
    counter: str = 'ignored'
    remedy: str = ''
    routine: bool = False


class DecisionQueue:
    """The newest frames, instruction and candidates, and the next decision they make.
    Thread-safe: callbacks put, one worker thread waits in :meth:`next`."""

    def __init__(self):
        self._cond = threading.Condition()
        self._stopping = False
        self.slots: list[Slot] = []
        self.instruction: str | None = None
        self.instruction_seq = 0
        self.instruction_time_ns = 0     # node clock when the instruction arrived
        self.decided_seq = 0             # on_instruction: the last instruction decided on
        self.candidates: np.ndarray | None = None
        self.choice: str | None = None
        self.last_decision = 0.0         # time.monotonic() of the last job taken
        self._recent_instructions: deque = deque(maxlen=RECENT_INSTRUCTIONS)

    # -- inputs ---------------------------------------------------------------------------
    def open(self, cameras: int) -> None:
        """One empty slot per camera (on activate; frames of a previous activation go)."""
        with self._cond:
            self.slots = [Slot() for _ in range(cameras)]

    def clear(self) -> None:
        """Forget everything the inputs said (the model was dropped)."""
        with self._cond:
            self.instruction, self.candidates, self.slots = None, None, []
            self.choice = None

    def put_frame(self, camera: int, msg, stamp_ns: int, now: float) -> bool | None:
        """Store ``camera``'s newest frame. True when it replaced one no decision used (a
        dropped frame), None when the camera has no slot (its topics are closing)."""
        with self._cond:
            if camera >= len(self.slots):
                return None
            slot = self.slots[camera]
            replaced = slot.fresh
            slot.msg, slot.fresh, slot.received_at, slot.stamp_ns = msg, True, now, stamp_ns
            self._cond.notify()
            return replaced

    def is_repeat(self, key) -> bool:
        """True when the instruction sample ``key`` was seen already (through the other
        instruction subscription); else remember it."""
        with self._cond:
            if key in self._recent_instructions:
                return True
            self._recent_instructions.append(key)
            return False

    def set_instruction(self, text: str | None, now_ns: int) -> None:
        """A new instruction (None: cleared, the node abstains) arrived at node time now_ns."""
        with self._cond:
            self.instruction = text
            self.instruction_seq += 1
            self.instruction_time_ns = now_ns
            self._cond.notify()

    def set_candidates(self, candidates: np.ndarray | None) -> None:
        """N x D vectors to score instead of the library (None: the library again)."""
        with self._cond:
            self.candidates = candidates

    def set_choice(self, option: str | None) -> None:
        """Pin the space's choice to ``option`` for the next decisions (None: free again)."""
        with self._cond:
            self.choice = option

    def decided(self, instruction_seq: int) -> None:
        """on_instruction mode: the instruction ``instruction_seq`` has had its decision."""
        with self._cond:
            self.decided_seq = max(self.decided_seq, instruction_seq)

    @property
    def lock(self) -> threading.Condition:
        """The lock :meth:`next` reads the settings under (hold it to change several)."""
        return self._cond

    # -- the worker -------------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            self._stopping = False

    def stop(self) -> None:
        """Make :meth:`next` return None now and until :meth:`start`."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def wake(self) -> None:
        """Have a waiting :meth:`next` look again (the schedule's settings changed)."""
        with self._cond:
            self._cond.notify()

    def next(self, settings: dict, clock_ns: Callable[[], int]) -> Job | Skip | None:
        """Wait for the next decision or skipped frame; None once stopped. ``settings`` as in
        :meth:`take`, read again on every wake-up; ``clock_ns()``: the node clock's now."""
        with self._cond:
            while not self._stopping:
                item, wait = self.take(settings, time.monotonic(), clock_ns())
                if item is not None:
                    return item
                self._cond.wait(timeout=wait)
            return None

    # -- the next decision ------------------------------------------------------------------
    def take(self, settings: dict, now: float,
             now_ns: int) -> tuple[Job | Skip | None, float | None]:
        """The next decision, a skipped frame, or (None, seconds to wait; None = until woken).
        The rule alone: the caller holds the lock (:meth:`next` does).

        A decision needs a fresh frame of the first camera (it triggers decisions), at most
        ``max_rate_hz`` of them (0 = every frame), stamped within ``max_image_age_s`` of the
        node clock ``now_ns`` (0 = no check). With ``mode`` on_instruction only one per
        instruction, on a frame stamped after the instruction arrived (the node clock stamps
        instructions). ``now`` is time.monotonic().
        """
        if not self.slots or not self.slots[0].fresh:
            return None, None
        rate = settings['max_rate_hz']
        if rate > 0:
            wait = self.last_decision + 1.0 / rate - now
            if wait > 0:
                return None, wait
        primary = self.slots[0]
        if settings['mode'] == 'on_instruction':
            if self.decided_seq == self.instruction_seq:
                primary.fresh = False
                return Skip('ignored', 'on_instruction: waiting for a new instruction',
                            'on_instruction mode: frames ignored until a new instruction '
                            'arrives', routine=True), None
            # "The next frame": one taken after the instruction arrived, so a frame of the
            # previous scene still in flight is not judged against the new instruction.
            if primary.stamp_ns < self.instruction_time_ns:
                primary.fresh = False
                return self._predating(primary.stamp_ns, now_ns), None
        msgs = [s.msg for s in self.slots]
        for s in self.slots:
            s.fresh = False
        self.last_decision = now
        stale = stale_reason(primary.stamp_ns, now_ns, settings['max_image_age_s'])
        if stale:
            return Skip('stale', stale, f'skipping stale frames, no decision: {stale}.',
                        counter='stale',
                        remedy='set max_image_age_s: 0 to turn the check off'), None
        return Job(msgs, self.instruction, self.instruction_seq, self.candidates,
                   primary.received_at, [s.received_at for s in self.slots],
                   choice=self.choice), None

    def _predating(self, stamp_ns: int, now_ns: int) -> Skip:
        """A frame stamped before the pending instruction arrived (on_instruction mode).

        Once right after an instruction it is a frame still in flight: routine. Still
        happening a second later, every frame predates the instruction: the camera's clock is
        behind the node's, and without a warning the node would wait forever in silence.
        """
        behind = (self.instruction_time_ns - stamp_ns) * 1e-9
        waiting = (now_ns - self.instruction_time_ns) * 1e-9
        reason = f'frame stamped {behind:.2f} s before the instruction arrived'
        if waiting < CLOCK_MISMATCH_AFTER_S:
            return Skip('ignored_in_flight', reason, f'on_instruction mode: {reason} (taken '
                        'before it; waiting for the next frame)')
        return Skip('clock_mismatch', f'{reason}; instruction undecided for {waiting:.1f} s',
                    f'on_instruction mode: no decision for {waiting:.1f} s: every frame is '
                    f'stamped before the instruction arrived (this one by {behind:.2f} s).',
                    remedy='use mode: continuous (no stamp comparison)')


def clock_advice(use_sim_time: bool, remedy: str) -> str:
    """What to do about frames stamped by a clock other than the node's."""
    source = 'sim time from /clock (use_sim_time true)' if use_sim_time else \
        'system time (use_sim_time false)'
    return (f'The node clock is {source}. A camera stamping with another clock (no time '
            'sync, a hardware clock, a bag replayed without use_sim_time) causes this: '
            f'sync the clocks (chrony/PTP), set use_sim_time to match the camera, or '
            f'{remedy}.')


def stale_reason(stamp_ns: int, now_ns: int, max_age_s: float) -> str:
    """Why a frame stamped ``stamp_ns`` is too old to decide on at node time ``now_ns`` ('' when
    it is not, or with max_age_s 0: no check)."""
    if max_age_s <= 0:
        return ''
    age = (now_ns - stamp_ns) * 1e-9
    return f'frame {age:.2f} s old > max_image_age_s {max_age_s}' if age > max_age_s else ''


def missing_cameras(topics: list[str], job: Job, timeout_s: float,
                    now: float) -> tuple[list[str], str]:
    """The camera topics (never the first: its frame triggered this decision) with no frame
    yet or, with ``timeout_s`` > 0, none received within it; and why, in words."""
    never, silent = [], []
    for i, topic in enumerate(topics):
        if i == 0:
            continue
        if job.msgs[i] is None:
            never.append(topic)
        elif timeout_s > 0 and job.received and now - job.received[i] > timeout_s:
            silent.append((topic, now - job.received[i]))
    reasons = [f'no frame yet from {never}'] if never else []
    if silent:
        listed = ', '.join(f'{t} (last {age:.1f} s ago)' for t, age in silent)
        reasons.append(f'no frame within camera_timeout_s {timeout_s:g} s from {listed}')
    return never + [t for t, _ in silent], '; '.join(reasons)
