"""One LIBERO episode as two decisions: pick from the first frame, place from the frame after
the grasp, each a point of the agentview image chosen by a policy and run by the executor.

A policy is any callable ``policy(frame, instruction, primitive) -> (u, v)``: ``frame`` a
:class:`~.camera.Frame` (upright RGB, depth in metres, calibration), ``primitive`` 'pick' or
'place', ``(u, v)`` normalised image coordinates of the upright agentview image.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from .camera import Frame
from .env import LiberoEnv, StepBudgetExhausted
from .executor import Executor, Refused

Policy = Callable[[Frame, str, str], tuple[float, float]]
PRIMITIVES = ('pick', 'place')
# Every way an episode can end; 'refused:<reason>' for a point the executor refused.
# Policies over topics add their own (libero_sim: timeout, invalid_action, wrong_primitive).
FAILURE_KINDS = ('missed_grasp', 'dropped', 'placed_off_target', 'out_of_steps', 'refused')
AFTER_RELEASE_STEPS = 15     # idle steps after the release while the object settles


class PolicyFailure(Exception):
    """A policy that could give no usable point (no decision in time, a malformed or wrong
    action): its episode ends as failed with ``kind``, the run goes on."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f'{kind}: {detail}')
        self.kind, self.detail = kind, detail


def check_action(vector, primitive: str) -> tuple[float, float]:
    """(u, v) of an action vector ``[pick, place, u, v]`` asked for ``primitive``.

    Raises:
        PolicyFailure: not 4 finite numbers (invalid_action), or the other primitive chosen
            (wrong_primitive). A point outside the image or off the table is the executor's
            to refuse: it knows the depth there.
    """
    values = [float(v) for v in vector]
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise PolicyFailure('invalid_action', f'expected 4 finite numbers [pick, place, u, v], '
                             f'got {values}')
    chosen = PRIMITIVES[int(np.argmax(values[:2]))]
    if chosen != primitive:
        raise PolicyFailure('wrong_primitive', f'asked for {primitive}, the vector chose '
                             f'{chosen} ({values})')
    return values[2], values[3]


@dataclass
class EpisodeResult:
    """How one episode went (JSON-serialisable through :meth:`to_dict`)."""
    success: bool
    failure: str | None
    steps: int
    points: dict = field(default_factory=dict)      # primitive -> [u, v]
    wall_s: float = 0.0
    frames: dict = field(default_factory=dict)      # primitive -> Frame (kept on request)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop('frames')
        return out


def run_episode(env: LiberoEnv, policy: Policy, keep_frames: bool = False,
                on_decision: Callable[[str, Frame, tuple], None] | None = None
                ) -> EpisodeResult:
    """Run the episode from the environment's current (freshly reset) state.

    Settle steps (gripper open), then for each primitive: render the agentview frame, ask
    ``policy`` for a point (a :class:`PolicyFailure` ends the episode as that failure), execute
    it. Success is LIBERO's ``check_success`` after the place;
    ``on_decision(primitive, frame, point)`` sees each decision (demonstrations record them).
    """
    start = time.perf_counter()
    executor = Executor(env)
    result = EpisodeResult(False, None, 0)
    try:
        env.settle()
        for primitive in PRIMITIVES:
            frame = env.render()
            try:
                # float32, as an action vector carries a point over topics: the same point
                # then runs in-process and through libero_sim (float64 points differed by
                # ~1e-8, which a grasp's contacts grew into a different arm pose by the place
                # frame: test_libero_demonstration_paths)
                point = tuple(float(np.float32(c))
                              for c in policy(frame, env.instruction, primitive))
            except PolicyFailure as exc:
                result.failure = exc.kind
                break
            result.points[primitive] = list(point)
            if keep_frames:
                result.frames[primitive] = frame
            try:
                outcome = getattr(executor, primitive)(*point, frame)
            except Refused as exc:
                result.failure = f'refused:{exc.reason}'
                break
            if on_decision is not None:
                on_decision(primitive, frame, point)
            if not outcome.ok:
                result.failure = outcome.failure
                break
        else:
            result.success = _settle_until_success(env)
            if not result.success:
                result.failure = 'placed_off_target'
    except StepBudgetExhausted:
        result.failure = 'out_of_steps'
    result.steps = env.steps
    result.wall_s = time.perf_counter() - start
    return result


def _settle_until_success(env: LiberoEnv) -> bool:
    if env.check_success():
        return True
    hold = np.array([0, 0, 0, 0, 0, 0, -1.0])
    for _ in range(min(AFTER_RELEASE_STEPS, env.steps_left)):
        env.step(hold)
        if env.check_success():
            return True
    return False
