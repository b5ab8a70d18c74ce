"""One LIBERO task's simulator with the cameras off for control (a step costs ~10 ms instead
of ~230 ms with robosuite's per-step camera observations) and frames rendered on demand."""
from __future__ import annotations

import contextlib
import io

import numpy as np

from .camera import Calibration, Frame, Renderer, camera_calibration
from .suites import SETTLE_STEPS, TaskSpec, initial_states, require_libero

AGENTVIEW = 'agentview'
WRIST = 'robot0_eye_in_hand'


class StepBudgetExhausted(RuntimeError):
    """The episode used every control step of its budget."""


class LiberoEnv:
    """A task's environment: reset to an official initial state or a seeded random placement,
    step the Panda's OSC_POSE controller (7-D: position delta, axis-angle delta, gripper),
    render cameras upright with depth and calibration, judge with LIBERO's ``check_success``.

    Each episode counts its control steps against ``spec.max_steps`` (settle steps included):
    :meth:`step` raises :class:`StepBudgetExhausted` past it.
    """

    def __init__(self, spec: TaskSpec, image_size: int = 256, max_steps: int | None = None):
        require_libero()
        from libero.libero.envs.env_wrapper import ControlEnv
        self.spec = spec
        self.max_steps = spec.max_steps if max_steps is None else max_steps
        with contextlib.redirect_stdout(io.StringIO()):
            # hard_reset=False: reset() re-places objects in the same MuJoCo model instead of
            # rebuilding it from XML, so the renderer (bound to the model) stays valid.
            self._env = ControlEnv(bddl_file_name=spec.bddl_path, has_offscreen_renderer=False,
                                   use_camera_obs=False, hard_reset=False,
                                   camera_names=[AGENTVIEW, WRIST])
        self._states = None
        self._renderer = None
        self.image_size = image_size
        self.steps = 0

    # --- episodes -------------------------------------------------------------------------
    @property
    def instruction(self) -> str:
        return self.spec.instruction

    def num_initial_states(self) -> int:
        return len(self._official())

    def _official(self):
        if self._states is None:
            self._states = initial_states(self.spec)
        return self._states

    def reset_official(self, index: int) -> None:
        """Reset to the task's official initial state ``index`` (evaluation only).

        An initial state holds the joints (robot, objects, drawers), not the fixtures: a
        cabinet or stove has no joint, and ``reset()`` draws its position anew (~1 cm) from
        NumPy's global generator, as in every LIBERO harness. The draw is seeded with
        ``index`` here, so state ``index`` is the same scene in every process and run.
        """
        states = self._official()
        if not 0 <= index < len(states):
            raise ValueError(f'{self.spec.name} has initial states 0..{len(states) - 1}, '
                             f'not {index}')
        self._reset_seeded(index, hard=False)
        self._env.set_init_state(states[index])
        self.steps = 0

    def reset_random(self, seed: int) -> None:
        """Reset to LIBERO's random placement drawn with ``seed``.

        A hard reset (the model rebuilt from its XML, ~0.4 s): LIBERO's sampler places an
        object on or in a fixture (a bowl in a drawer, on a stove) at the fixture's sites
        before this reset moves the fixture, so after a soft reset such objects start in the
        air or inside the cabinet and fall (issue 28: the bowl of libero_spatial task 4 sat on
        the cabinet or the floor, never in its drawer).
        """
        self._reset_seeded(seed, hard=True)
        self.steps = 0

    def _reset_seeded(self, seed: int, hard: bool) -> None:
        """``reset()`` with NumPy's global generator (robosuite's placement samplers draw from
        it) seeded with ``seed`` and restored afterwards."""
        renv = self._env.env
        saved = np.random.get_state()
        try:
            np.random.seed(seed)
            renv.hard_reset = hard
            with contextlib.redirect_stdout(io.StringIO()):
                self._env.reset()
        finally:
            renv.hard_reset = False
            np.random.set_state(saved)
        if hard and self._renderer is not None:
            # the renderer is bound to the model the hard reset replaced
            self._renderer.close()
            self._renderer = None

    def settle(self, steps: int = SETTLE_STEPS) -> None:
        """Hold still with the gripper open while objects settle (the harnesses' first steps)."""
        for _ in range(steps):
            self.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))

    # --- control --------------------------------------------------------------------------
    def step(self, action) -> None:
        """One 20 Hz control step of OSC_POSE; raises past the step budget."""
        if self.steps >= self.max_steps:
            raise StepBudgetExhausted(f'{self.max_steps} control steps used')
        self._env.step(np.asarray(action, float))
        self.steps += 1

    @property
    def steps_left(self) -> int:
        return self.max_steps - self.steps

    def check_success(self) -> bool:
        """LIBERO's own success check of the task's BDDL goal."""
        return bool(self._env.check_success())

    # --- what a real robot knows about itself (proprioception and calibration) ------------
    @property
    def _robot(self):
        return self._env.env.robots[0]

    def eef_pos(self) -> np.ndarray:
        """End-effector (grip site, between the finger pads) position in the world."""
        return np.array(self.sim.data.site_xpos[self._robot.eef_site_id])

    def eef_rot(self) -> np.ndarray:
        """End-effector orientation (3x3) in the world."""
        return np.array(self.sim.data.site_xmat[self._robot.eef_site_id]).reshape(3, 3)

    def gripper_width(self) -> float:
        """Distance between the two finger joints (m): ~0.08 open, ~0.002 closed on nothing."""
        q = self.sim.data.qpos[self._robot._ref_gripper_joint_pos_indexes]
        return float(q[0] - q[1])

    def robot_base(self) -> np.ndarray:
        """World position of the robot's base (its mounting: calibration, not object state)."""
        return np.array(self.sim.data.body_xpos[self.sim.model.body_name2id(
            self._robot.robot_model.root_body)])

    # --- cameras --------------------------------------------------------------------------
    def render(self, camera: str = AGENTVIEW, depth: bool = True) -> Frame:
        """Upright RGB, depth in metres and calibration of ``camera`` at the current state."""
        if self._renderer is None:
            self._renderer = Renderer(self.sim.model._model, self.sim.data._data,
                                      self.image_size, self.image_size)
        return self._renderer.render(camera, depth)

    def calibration(self, camera: str = AGENTVIEW) -> Calibration:
        """``camera``'s calibration at the environment's image size, without rendering."""
        return camera_calibration(self.sim.model._model, self.sim.data._data, camera,
                                  self.image_size, self.image_size)

    # --- simulator state (the expert's and the tests' business, never the executor's) -----
    @property
    def sim(self):
        return self._env.env.sim

    @property
    def robosuite_env(self):
        return self._env.env

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        with contextlib.suppress(Exception):
            self._env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
