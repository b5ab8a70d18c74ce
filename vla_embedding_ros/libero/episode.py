"""One LIBERO episode as two decisions: pick from the first frame, place from the frame after
the grasp, each a point of the agentview image chosen by a policy and run by the executor.

A pick that the gripper reports empty (it closed on nothing or the object slipped out as it
lifted: ``missed_grasp``) or that lost the object on the way to the place (``dropped``) is
tried again, from a new frame and a new decision, while the episode's step budget leaves
room for a whole pick and place: what a closed-loop robot does, and it needs nothing but
the gripper's own width (proprioception), never the success check.

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
GRASP_ATTEMPTS = 3           # picks an episode may make (the first and two retries) ...
RETRY_FAILURES = ('missed_grasp', 'dropped')   # ... after these (seen in the gripper's width)
RETRY_MIN_STEPS = 110        # ... when this many steps are left (a pick and place takes
                             # 120-185 incl. settling: a retry with less would run out)


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
    points: dict = field(default_factory=dict)      # primitive -> [u, v] (the last decision)
    wall_s: float = 0.0
    # every decision in order: {'primitive', 'point', 'failure' (None when it worked)}
    attempts: list = field(default_factory=list)
    frames: dict = field(default_factory=dict)      # primitive -> Frame (kept on request)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop('frames')
        return out


def run_episode(env: LiberoEnv, policy: Policy, keep_frames: bool = False,
                on_decision: Callable[[str, Frame, tuple], None] | None = None,
                grasp_attempts: int = GRASP_ATTEMPTS,
                before_frame: Callable[[str], None] | None = None) -> EpisodeResult:
    """Run the episode from the environment's current (freshly reset) state.

    Settle steps (gripper open), then for each primitive: render the agentview frame, ask
    ``policy`` for a point (a :class:`PolicyFailure` ends the episode as that failure), execute
    it; a failed pick (RETRY_FAILURES) starts again from the pick, at most ``grasp_attempts``
    picks and while RETRY_MIN_STEPS are left. Success is LIBERO's ``check_success`` after the
    place; ``on_decision(primitive, frame, point)`` sees each decision (demonstrations record
    them). ``keep_frames`` keeps each primitive's frame (of its last decision, as ``points``).
    ``before_frame(primitive)`` runs before each decision's frame is rendered: a
    demonstration's scene change between the decisions (:func:`.demonstrations.scene_change`).
    """
    if grasp_attempts < 1:
        raise ValueError(f'grasp_attempts must be at least 1, got {grasp_attempts}')
    start = time.perf_counter()
    executor = Executor(env)
    result = EpisodeResult(False, None, 0)
    picks = 0
    try:
        env.settle()
        step = 0
        while step < len(PRIMITIVES):
            primitive = PRIMITIVES[step]
            picks += primitive == 'pick'
            if before_frame is not None:
                before_frame(primitive)
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
            attempt = {'primitive': primitive, 'point': list(point), 'failure': None}
            result.attempts.append(attempt)
            try:
                outcome = getattr(executor, primitive)(*point, frame)
            except Refused as exc:
                result.failure = attempt['failure'] = f'refused:{exc.reason}'
                break
            if on_decision is not None:
                on_decision(primitive, frame, point)
            if not outcome.ok:
                result.failure = attempt['failure'] = outcome.failure
                if (outcome.failure in RETRY_FAILURES and picks < grasp_attempts
                        and env.steps_left >= RETRY_MIN_STEPS):
                    executor = Executor(env)     # holds nothing: no hang, no yaw
                    step = 0
                    continue
                break
            step += 1
        else:
            result.failure = None
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
