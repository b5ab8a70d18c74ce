"""A scripted expert: it reads the answer from the simulator (the BDDL goal's object and
target, their geometry) and points at them in the agentview image, where a model would point.
It acts only through those points and the same :class:`~.executor.Executor`, so its success
is the executor's ceiling. Training data only: a policy under evaluation never sees this.
"""
from __future__ import annotations

import numpy as np

from .camera import Frame
from .env import LiberoEnv
from .executor import GRASP_DEPTH, YAWS, Executor, Refused, closing_axis, hand_intrusion

RIM_INSETS = (0.008, 0.012, 0.016, 0.02)   # grasp a bowl's wall this far inside its outer radius


class NotPickAndPlace(ValueError):
    """The task's goal is not one pick-and-place (``on``/``in`` one object, one target)."""


def goal_pair(env: LiberoEnv) -> tuple[str, str]:
    """``(object, target)`` body names of the task's single ``on``/``in`` goal."""
    renv = env.robosuite_env
    goal = renv.parsed_problem['goal_state']
    if len(goal) != 1 or goal[0][0].lower() not in ('on', 'in') or len(goal[0]) != 3:
        raise NotPickAndPlace(f'{env.spec.name}: goal {goal} is not one on/in predicate')
    _, obj, target = goal[0]
    bodies = renv.obj_body_id
    if target not in bodies:   # a region such as basket_1_contain_region: its object
        owners = [name for name in bodies if target.startswith(name + '_')]
        if not owners:
            raise NotPickAndPlace(f'{env.spec.name}: no object owns region {target!r}')
        target = max(owners, key=len)
    return obj, target


def body_box(env: LiberoEnv, name: str) -> tuple[np.ndarray, np.ndarray]:
    """World axis-aligned box ``(low, high)`` around the collision geoms of body ``name``'s
    subtree (visual meshes' boxes are loose: a bowl's reads 3 cm wider than its walls)."""
    m, d = env.sim.model._model, env.sim.data._data
    root = env.robosuite_env.obj_body_id[name]
    in_tree = np.zeros(m.nbody, bool)
    for b in range(m.nbody):
        a = b
        while a > 0 and a != root:
            a = m.body_parentid[a]
        in_tree[b] = a == root
    corners = []
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    geoms = np.flatnonzero(in_tree[m.geom_bodyid])
    solid = geoms[(m.geom_contype[geoms] | m.geom_conaffinity[geoms]) != 0]
    for g in solid if len(solid) else geoms:
        centre, half = m.geom_aabb[g, :3], m.geom_aabb[g, 3:]
        local = centre + signs * half
        corners.append(local @ d.geom_xmat[g].reshape(3, 3).T + d.geom_xpos[g])
    pts = np.concatenate(corners)
    return pts.min(0), pts.max(0)


def grasp_point(env: LiberoEnv, obj: str, frame: Frame | None = None) -> np.ndarray:
    """Where the fingers should go: a bowl's wall, else the top of the object.

    For a bowl the candidates are its wall on either side along each of the executor's yaws'
    closing axes (:data:`~.executor.YAWS`) at a few insets, where the executor's own choice of
    yaw from the depth (:func:`~.executor.choose_grasp`) agrees; with ``frame`` the chosen one
    leaves the open hand the most room
    (:func:`~.executor.hand_intrusion` of the depth's other surfaces), preferring a point
    whose pixel lifts back onto the bowl (a 3 mm wall seen edge-on is easy to miss). Another
    object is grasped on its top, at the middle unless the hand fits better off it along x.
    """
    low, high = body_box(env, obj)
    centre = (low + high) / 2
    top = np.array([centre[0], centre[1], high[2]])
    if 'bowl' in obj:   # the wall where fingers closing along a yaw's axis straddle it
        radius = min(high[0] - low[0], high[1] - low[1]) / 2
        candidates = [top + [*(side * (radius - inset) * closing_axis(yaw)), 0.0]
                      for yaw in YAWS for side in (1.0, -1.0) for inset in RIM_INSETS]
        yaws = [yaw for yaw in YAWS for _ in (1.0, -1.0) for _ in RIM_INSETS]
    else:   # along x inside its top (fingers close along y): away from a neighbour's side
        room = max((high[0] - low[0]) / 2 - 0.01, 0.0)
        candidates = [top + [dx, 0.0, 0.0] for dx in (0.0, 0.015, -0.015, 0.03, -0.03)
                      if abs(dx) <= room]
    if frame is None:
        return candidates[0]
    yaw_of = ({id(c): y for c, y in zip(candidates, yaws, strict=True)}
              if 'bowl' in obj else {})
    cloud = frame.point_cloud().reshape(-1, 3)
    cloud = cloud[cloud[:, 2] < env.eef_pos()[2] - 0.03]       # not the robot's own arm
    inside = np.all((cloud >= low - 0.002) & (cloud <= high + 0.002), axis=1)
    around = cloud[~inside]                                    # everything but the bowl
    executor = Executor(env)                # what the executor will make of a point's pixel
    seen_cloud = executor.surroundings(frame)

    def cost(rim):
        (x, y), _ = frame.calibration.world_to_pixel(rim)
        if not (0 <= x < frame.calibration.width and 0 <= y < frame.calibration.height):
            return np.inf
        if 'bowl' not in obj:
            return hand_intrusion(around, rim - [0.0, 0.0, GRASP_DEPTH]) + 0.01 * abs(
                rim[0] - centre[0])
        seen = frame.lift(x, y)
        on_bowl = bool(np.all(seen[:2] > low[:2] - 0.005) and np.all(seen[:2] < high[:2] + 0.005)
                       and seen[2] > low[2] + 0.01)
        grasp = rim - [0.0, 0.0, GRASP_DEPTH]
        yaw = yaw_of[id(rim)]
        # the executor chooses its yaw from the depth alone: the wall must be the one its
        # fingers will straddle
        try:
            plan = executor.plan_grasp(*frame.calibration.pixel_to_normalised(x, y), frame,
                                       seen_cloud)
        except Refused:
            return np.inf
        t, planned = plan.target, plan.yaw
        agrees = abs(planned - yaw) < 1e-6
        # where the executor will put the fingers: across the wall (radially) at its yaw
        radial = t.point[:2] - centre[:2]
        across = abs(float(radial @ closing_axis(planned))) / max(np.linalg.norm(radial), 1e-6)
        return (hand_intrusion(around, grasp, yaw, plan.opening)
                + 0.5 * float(np.linalg.norm(seen - rim))
                + 0.05 * (1.0 - across)
                + (0.0 if on_bowl else 0.05) + (0.0 if agrees else 0.03)
                + (0.02 if yaw else 0.0) + 0.002 * abs(yaw))
    return min(candidates, key=cost)


def place_point(env: LiberoEnv, target: str) -> np.ndarray:
    """The middle of the target's top: a plate's surface, a basket's opening."""
    low, high = body_box(env, target)
    centre = (low + high) / 2
    return np.array([centre[0], centre[1], high[2]])


def visible_pixel(frame: Frame, world: np.ndarray, horizontal: bool = False,
                  window: int = 24) -> tuple[float, float]:
    """The pixel near ``world``'s projection whose depth lifts closest to ``world`` (only
    horizontally with ``horizontal``): the executor acts where the pixel's depth lands, and a
    point's own projection may see something in front of it (a basket's front wall)."""
    cal = frame.calibration
    (x, y), _ = cal.world_to_pixel(world)
    cx, cy = int(np.clip(x, 0, cal.width - 1)), int(np.clip(y, 0, cal.height - 1))
    x0, x1 = max(cx - window, 0), min(cx + window + 1, cal.width)
    y0, y1 = max(cy - window, 0), min(cy + window + 1, cal.height)
    ys, xs = np.mgrid[y0:y1, x0:x1] + 0.5
    lifted = cal.pixel_to_world(xs, ys, frame.depth[y0:y1, x0:x1])
    diff = lifted - world
    dist = np.hypot(diff[..., 0], diff[..., 1]) if horizontal else np.linalg.norm(diff, axis=-1)
    # Ties (a flat surface) go to the pixel nearest the projection.
    dist = dist + 1e-4 * np.hypot(xs - x, ys - y)
    i, j = np.unravel_index(np.argmin(dist), dist.shape)
    return float(xs[i, j]), float(ys[i, j])


class ExpertPolicy:
    """A policy (see :mod:`.episode`) that answers from the simulator state of ``env``."""

    def __init__(self, env: LiberoEnv):
        self.env = env
        self.object, self.target = goal_pair(env)

    def __call__(self, frame: Frame, instruction: str, primitive: str) -> tuple[float, float]:
        if primitive == 'pick':
            world = grasp_point(self.env, self.object, frame)
            if 'bowl' in self.object:   # grasp_point chose a wall whose pixel is seen
                (x, y), _ = frame.calibration.world_to_pixel(world)
            else:
                x, y = visible_pixel(frame, world)
            low, high = body_box(self.env, self.object)
            # The hand will hold the object where the pixel's depth lands, this far from its
            # middle: place the hand as far from the target's middle, so the object lands
            # centred.
            inside = 0 <= x < frame.calibration.width and 0 <= y < frame.calibration.height
            # (outside: the object is out of view; the executor refuses the point)
            self._offset = (np.array([*(frame.lift(x, y)[:2] - (low[:2] + high[:2]) / 2), 0.0])
                            if inside else np.zeros(3))
        else:   # a place goes where the pixel's ray leads (the executor finds the surface)
            if self.env.gripper_width() > 0.003:
                # where the hand holds the object now (it may have slipped in the grasp
                # since), from the object's origin: LIBERO judges "on" by the origins' distance
                # (< 3 cm), and a bowl hanging tilted from its rim has its box's middle ~1 cm
                # off its origin (the middle of its foot, where it lands)
                origin = self.env.sim.data.body_xpos[self.env.robosuite_env.obj_body_id[
                    self.object]]
                self._offset = np.array([*(self.env.eef_pos()[:2] - origin[:2]), 0.0])
            world = place_point(self.env, self.target) + getattr(self, '_offset', 0.0)
            (x, y), _ = frame.calibration.world_to_pixel(world)
        return frame.calibration.pixel_to_normalised(x, y)
