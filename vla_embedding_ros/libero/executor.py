"""Pick and place at a point of the agentview image, with no privileged simulator state.

The executor sees what a real robot with a calibrated RGB-D camera sees: the frame's depth and
calibration, its own end-effector pose and gripper width. A point ``(u, v)`` is normalised
image coordinates of the UPRIGHT agentview image (:mod:`.camera`: u to the right, v down, both
in [0, 1]). It is lifted to 3-D through the depth at that pixel; the depth around it gives the
height to grasp at (or release from) and the support the object stands on. The Panda moves
top-down, its hand turned about the vertical to the yaw whose open fingers fit the depth
around the grasp best (:func:`choose_yaw`), by proportional OSC_POSE deltas.

Bad points are refused before the robot moves: :class:`Refused` names the reason (outside the
image, not finite, no depth there, off the workspace the arm can reach).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .camera import Frame
from .env import LiberoEnv, StepBudgetExhausted

# Top-down grasp, fingers closing along world y: the orientation LIBERO's Panda starts in.
DOWN = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
OPEN, CLOSE, KEEP = -1.0, 1.0, 0.0     # gripper commands (KEEP: hold the current width)
MAX_DELTA = 0.05          # m per step at action 1.0 (robosuite's OSC_POSE output_max)
MAX_ROT_DELTA = 0.5       # rad per step at action 1.0
KP, KD = 4.0, 4.0         # position gain and damping (per step), tuned on LIBERO's Panda
STALL_STEPS = 12          # a move that gets no closer for this many steps ends
RELEASE_SPEED = 0.8       # of the controller's range: the approach to a release point ...
LOWER_SPEED = 0.6         # ... and the guarded lowering onto a surface

# Reachable workspace around the robot's base (its mount is calibration, not object state).
REACH_MIN, REACH_MAX = 0.25, 0.95          # horizontal distance from the base (m)
BELOW_BASE, ABOVE_BASE = 0.15, 0.50        # height band around the base (m)

GRASP_DEPTH = 0.02        # finger pads this far below the top of what they grasp (the hand's
                          # palm is 2.4 cm above the pads) ...
SUPPORT_CLEARANCE = 0.014  # ... but the grip site this far above the support (finger tips
                          # reach 1.3 cm below it)
TOP_RADIUS = 0.02         # m: points around the target that make its top
SUPPORT_RADIUS = (0.05, 0.12)   # m: the annulus whose low points make the support
CLEAR_RADIUS = 0.08       # m: what a held object must clear when lowered onto a target
CARRY = 0.10              # carry a held object's bottom this far above its old support
OPENING_RADIUS = 0.05     # m: around a place point, what makes a container's rim
                          # (its top 1%: a thin rim is few points)
HOVER = 0.06              # approach from this far above the grasp/release height
HELD_WIDTH = 0.003        # width after closing above this = something held (a bowl's wall ~0.005)
MAX_HANG = 0.13           # no object of these suites reaches further below the grip
PATH_RADIUS = 0.10        # m: a straight path must clear what lies this close to it ...
PATH_CLEARANCE = 0.03     # ... by this much (below what the hand holds)
HELD_RADIUS = 0.06        # m: around the hand, where the place frame shows what it holds ...
HELD_SPARSE = 12          # ... down to two 1 cm layers with fewer points than this
RELEASE_GAP = 0.02        # held object's bottom this far above the target's top at release


class Refused(ValueError):
    """A point the executor will not act on (before any motion); ``reason`` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f'{reason}: {detail}')
        self.reason = reason


@dataclass
class Outcome:
    """What a primitive did: ``ok``, else ``failure`` (missed_grasp, dropped, out_of_steps)."""
    ok: bool
    failure: str | None = None
    steps: int = 0
    info: dict = field(default_factory=dict)


@dataclass
class _Target:
    point: np.ndarray      # lifted point (world)
    top: float             # top of what is around the point (world z)
    support: float         # what it stands on (world z)
    clear: float           # highest surface within CLEAR_RADIUS (world z)


class Executor:
    """``pick(u, v, frame)`` then ``place(u, v, frame)`` on one :class:`LiberoEnv` episode."""

    def __init__(self, env: LiberoEnv):
        self.env = env
        self.hang = 0.0            # how far the held object reaches below the grip site
        self.yaw = 0.0             # hand rotation about world z (0: fingers close along y)

    # --- lifting a point ------------------------------------------------------------------
    def surroundings(self, frame: Frame) -> np.ndarray:
        """The frame's world points [N, 3] without the robot and what it holds: everything
        above the hand, and near the hand (10 cm) down to the held object's bottom. The robot
        knows where its hand is (proprioception); its arm rises from there."""
        cloud = frame.point_cloud().reshape(-1, 3)
        hand = self.env.eef_pos()
        near_hand = np.hypot(*(cloud[:, :2] - hand[:2]).T) < 0.10
        robot = (cloud[:, 2] > hand[2] - 0.03) | (near_hand & (cloud[:, 2] > hand[2] - self.hang
                                                               - 0.03))
        return cloud[~robot]

    def measure_hang(self, frame: Frame) -> float | None:
        """How far what the hand holds reaches below the grip site, seen in ``frame``: of the
        points under the hand (HELD_RADIUS), 1 cm layers down from the fingers until two in a
        row are nearly empty (fewer than HELD_SPARSE points: edge pixels mix depths and bridge
        any gap thinly); None when the first layers are already empty. A bowl held by its rim
        can tilt to hang 5-10 cm, far below the estimate from where it stood."""
        hand = self.env.eef_pos()
        cloud = frame.point_cloud().reshape(-1, 3)
        column = cloud[np.hypot(*(cloud[:, :2] - hand[:2]).T) < HELD_RADIUS, 2]
        start = hand[2] - FINGERS['below']
        edges = start - np.arange(0.0, MAX_HANG + 0.011, 0.01)
        counts = np.histogram(column, bins=edges[::-1])[0][::-1]    # top layer first
        sparse = counts < HELD_SPARSE
        runs = np.flatnonzero(sparse[:-1] & sparse[1:])
        if not runs.size:
            return MAX_HANG
        if runs[0] == 0:
            return None
        return float(hand[2] - edges[runs[0]] + 0.01)     # the layer it ends in: its bottom

    def lift(self, u, v, frame: Frame, cloud: np.ndarray | None = None) -> _Target:
        """The 3-D target at normalised image point ``(u, v)``, or :class:`Refused`
        (``cloud``: the frame's :meth:`surroundings`, when already computed)."""
        try:
            u, v = float(u), float(v)
        except (TypeError, ValueError) as exc:
            raise Refused('not_a_number', f'({u!r}, {v!r})') from exc
        if not (np.isfinite(u) and np.isfinite(v)):
            raise Refused('not_finite', f'point ({u}, {v})')
        if not (0.0 <= u < 1.0 and 0.0 <= v < 1.0):
            raise Refused('outside_image', f'point ({u:.3f}, {v:.3f}) is not in [0, 1)^2')
        cal = frame.calibration
        x, y = cal.normalised_to_pixel(u, v)
        depth = frame.depth_at(x, y)
        if not np.isfinite(depth) or depth <= 0:
            raise Refused('no_depth', f'no depth at pixel ({x:.1f}, {y:.1f})')
        point = cal.pixel_to_world(x, y, depth)
        base = self.env.robot_base()
        reach = float(np.hypot(*(point[:2] - base[:2])))
        if not (REACH_MIN <= reach <= REACH_MAX
                and base[2] - BELOW_BASE <= point[2] <= base[2] + ABOVE_BASE):
            raise Refused('off_workspace', f'point ({u:.3f}, {v:.3f}) lifts to '
                          f'{np.round(point, 3).tolist()}, {reach:.2f} m from the robot base '
                          f'(reach {REACH_MIN}-{REACH_MAX} m, height within '
                          f'-{BELOW_BASE}/+{ABOVE_BASE} m of the base)')
        cloud = self.surroundings(frame) if cloud is None else cloud
        near = np.hypot(*(cloud[:, :2] - point[:2]).T)
        top = np.percentile(cloud[near < TOP_RADIUS][:, 2], 95) if (near < TOP_RADIUS).any() \
            else point[2]
        ring = (near >= SUPPORT_RADIUS[0]) & (near < SUPPORT_RADIUS[1])
        support = min(np.percentile(cloud[ring][:, 2], 50), point[2]) if ring.any() \
            else point[2]
        around = cloud[near < CLEAR_RADIUS][:, 2]
        # Nothing but the robot around the point (the hand hangs right over it): clear what
        # the hand itself is above.
        clear = (np.percentile(around, 98) if around.size else
                 max(point[2], self.env.eef_pos()[2] - self.hang))
        return _Target(point, float(max(top, point[2])), float(support), float(clear))

    def _opening(self, t: _Target, frame: Frame, cloud: np.ndarray) -> _Target:
        """For a place into a container: where the pixel's ray crosses the container's rim.

        One camera cannot see a basket's floor behind its front wall: the pixel at the middle
        of the opening lands on the far inner wall. The opening's height is the top of what
        surrounds the seen point (OPENING_RADIUS); when that is above the point, the hand goes
        where the ray crosses it, i.e. over the middle of the opening, and releases above it.
        ``cloud``: the frame's :meth:`surroundings`.
        """
        dist = np.hypot(*(cloud[:, :2] - t.point[:2]).T)
        near = dist < OPENING_RADIUS
        rim = float(np.percentile(cloud[near][:, 2], 99)) if near.any() else t.point[2]
        ring = (dist >= SUPPORT_RADIUS[0]) & (dist < SUPPORT_RADIUS[1])
        ground = float(np.percentile(cloud[ring][:, 2], 5)) if ring.any() else t.point[2]
        if t.point[2] < ground + 0.03 or rim < t.point[2] + 0.02:
            return t      # a surface to put things on (a plate), not an opening
        origin = frame.calibration.world_from_camera[:3, 3]
        crossing = origin + (t.point - origin) * (rim - origin[2]) / (t.point[2] - origin[2])
        return _Target(crossing, max(rim, t.top), t.support, t.clear)

    @staticmethod
    def hang_for(grasp_z: float, t: _Target) -> float:
        """How far a grasped object reaches below the grip site: down to its support (an upper
        bound: it may stand on something), at most MAX_HANG."""
        return min(grasp_z - t.support, MAX_HANG)

    def plan_grasp(self, u, v, frame: Frame, cloud: np.ndarray | None = None) -> GraspPlan:
        """The grasp a pick at ``(u, v)`` would make (:class:`Refused` as :meth:`lift`);
        ``cloud``: the frame's :meth:`surroundings`, when already computed."""
        cloud = self.surroundings(frame) if cloud is None else cloud
        t = self.lift(u, v, frame, cloud)
        grasp_z = max(t.top - GRASP_DEPTH, t.support + SUPPORT_CLEARANCE)
        yaw, opening = choose_grasp(cloud, np.array([*t.point[:2], grasp_z]))
        return GraspPlan(t, grasp_z, yaw, opening)

    # --- primitives -----------------------------------------------------------------------
    def pick(self, u, v, frame: Frame) -> Outcome:
        """Grasp what is at ``(u, v)`` of ``frame`` from above and lift it, the hand turned
        to the yaw that fits the depth around the grasp best."""
        plan = self.plan_grasp(u, v, frame)
        t, grasp_z, self.yaw = plan.target, plan.z, plan.yaw
        start = self.env.steps
        above = np.array([t.point[0], t.point[1], max(t.clear, t.top) + HOVER])
        try:
            self._travel(above, OPEN)
            hand = OPEN
            if plan.opening < OPEN_WIDTH:      # pre-shape: close to the opening, then keep it
                self._preshape(plan.opening)
                hand = KEEP
            self._move(np.array([*t.point[:2], grasp_z]), hand, speed=0.5, tol=0.005)
            self._hold(hand, 2)
            self._hold(CLOSE, 10)
            carry = max(above[2] + 0.04, t.support + self.hang_for(grasp_z, t) + CARRY)
            self._move([*above[:2], carry], CLOSE, speed=0.6, tol=0.02, via=True)
        except StepBudgetExhausted:
            return Outcome(False, 'out_of_steps', self.env.steps - start)
        self.hang = self.hang_for(grasp_z, t)
        width = self.env.gripper_width()
        info = {'grasp_z': grasp_z, 'yaw': self.yaw, 'opening': plan.opening, 'top': t.top,
                'support': t.support, 'width': width, 'point': t.point.tolist()}
        if width < HELD_WIDTH:
            return Outcome(False, 'missed_grasp', self.env.steps - start, info)
        return Outcome(True, None, self.env.steps - start, info)

    def place(self, u, v, frame: Frame) -> Outcome:
        """Carry the held object above ``(u, v)`` of ``frame`` and put it there: onto a
        surface by lowering until it touches (a guarded move: the held object's length is only
        an upper bound when it stood on something), into a container by releasing it above
        the container's rim."""
        seen = self.measure_hang(frame)
        if seen is not None:
            self.hang = seen
        # one lifted cloud for the whole plan (it masks the hand and what hangs from it)
        cloud = self.surroundings(frame)
        t = self.lift(u, v, frame, cloud)
        opening = self._opening(t, frame, cloud)
        start = self.env.steps
        into = opening is not t
        t = opening
        release_z = t.top + self.hang + RELEASE_GAP
        above = np.array([t.point[0], t.point[1], max(t.clear + self.hang + 0.03,
                                                      release_z + 0.02)])
        try:
            self._travel(above, CLOSE, speed=0.9, cloud=cloud, hang=self.hang)
            if self.env.gripper_width() < HELD_WIDTH:
                return Outcome(False, 'dropped', self.env.steps - start)
            # LIBERO's "on" needs the object's middle within 3 cm of the target's: arrive
            # within 5 mm (a held object makes the hand lag and drift)
            self._move(np.array([*t.point[:2], release_z]), CLOSE, speed=RELEASE_SPEED,
                       tol=0.005)
            if not into:
                self._lower_until_contact(np.array([*t.point[:2], t.top + 0.01]), CLOSE)
        except StepBudgetExhausted:
            return Outcome(False, 'out_of_steps', self.env.steps - start)
        release = self.env.eef_pos()
        try:
            self._hold(OPEN, 6)
            self._move(self.env.eef_pos() + [0, 0, 0.05], OPEN, speed=0.5, tol=0.02, via=True)
        except StepBudgetExhausted:
            pass    # let go where it was put: LIBERO judges it there
        return Outcome(True, None, self.env.steps - start,
                       {'release_z': float(release[2]), 'release': release.tolist(), 'top': t.top,
                        'hang': self.hang, 'hang_seen': seen,
                        'clear': t.clear, 'into': into, 'point': t.point.tolist()})

    # --- motion ---------------------------------------------------------------------------
    def _travel(self, goal, gripper, speed=1.0, cloud=None, hang=0.0):
        """Go to ``goal`` (above what it approaches): straight there when the depth (``cloud``,
        the frame's :meth:`surroundings`) shows nothing within PATH_RADIUS of the straight
        line that reaches within PATH_CLEARANCE of what hangs ``hang`` below the hand; else
        rise first when below its height, cross at the higher of the two heights, then go
        straight down."""
        pos = self.env.eef_pos()
        if cloud is not None and self._path_clear(pos, goal, cloud, hang):
            self._move(goal, gripper, speed, tol=0.008)
            return
        height = max(goal[2], pos[2])
        if height - pos[2] > 0.02:
            self._move(np.array([pos[0], pos[1], height]), gripper, speed, tol=0.02, via=True)
        if np.hypot(*(goal[:2] - pos[:2])) > 0.03:
            self._move(np.array([goal[0], goal[1], height]), gripper, speed, tol=0.02, via=True)
        self._move(goal, gripper, speed, tol=0.008)

    @staticmethod
    def _path_clear(start, goal, cloud, hang) -> bool:
        """Whether the straight line from ``start`` to ``goal`` keeps what hangs ``hang``
        below the hand PATH_CLEARANCE above every surface within PATH_RADIUS of it."""
        if not len(cloud):
            return False
        for s in np.linspace(0.0, 1.0, 16):
            at = start + s * (goal - start)
            near = np.hypot(*(cloud[:, :2] - at[:2]).T) < PATH_RADIUS
            if near.any() and cloud[near, 2].max() > at[2] - hang - PATH_CLEARANCE:
                return False
        return True

    def _move(self, goal, gripper, speed, tol, via=False, max_steps=90):
        """PD steps toward ``goal`` with the orientation held top-down, until within ``tol`` m
        (and nearly still unless ``via``: a waypoint passed through) or ``max_steps``.

        robosuite's OSC_POSE moves the hand only ~a quarter of each commanded delta per step
        and coasts several centimetres after fast motion, hence the gain and the damping.
        """
        goal = np.asarray(goal, float)
        prev = self.env.eef_pos()
        still = stuck = 0
        best = np.inf
        for _ in range(max_steps):
            pos = self.env.eef_pos()
            vel, prev = pos - prev, pos
            err = goal - pos
            dist = float(np.linalg.norm(err))
            if dist < tol and (via or np.linalg.norm(vel) < 0.002):
                return
            # Stalled close to the goal (the fingers, or what they hold, rest on something):
            # as close as it gets; holding something, also when it only creeps (pressing it
            # onto something).
            still = still + 1 if np.linalg.norm(vel) < 0.001 else 0
            stuck = stuck + 1 if dist > best - 0.0003 else 0
            best = min(best, dist)
            if (still >= 4 and dist < 0.02) or (gripper == CLOSE and stuck >= 5
                                                 and dist < 0.03):
                return
            # No closer for long (at the edge of the arm's reach, or what the hand holds
            # rests on something): as close as it gets; the steps are the episode's budget.
            if stuck >= STALL_STEPS:
                return
            self._step(KP * err - KD * vel, gripper, speed)

    def _lower_until_contact(self, floor, gripper, max_steps=40):
        """Lower slowly toward ``floor`` (a world point: the hand keeps to its x, y) until
        the hand stops descending (what it holds rests on something) or it gets there."""
        prev = self.env.eef_pos()
        slow = 0
        for n in range(max_steps):
            pos = self.env.eef_pos()
            drop, prev = prev[2] - pos[2], pos
            if pos[2] <= floor[2] + 0.004:
                return
            slow = slow + 1 if n >= 3 and drop < 0.001 else 0
            if slow >= 2:
                return
            # the held weight and a long reach push the hand off its x, y as it descends:
            # keep correcting them, the descent itself slow
            self._step(KP * (floor - pos), gripper, speed=LOWER_SPEED)

    def _preshape(self, opening):
        """Close the open hand to ~``opening`` (m between the fingers) where it is, then
        KEEP it: each closing step takes ~9.5 mm off the final width (the fingers go on
        closing for ~5 steps after the command: measured on LIBERO's Panda, 3 steps leave
        5.2 cm, 5 leave 3.2 cm), so the steps are counted, not the width watched."""
        self._hold(CLOSE, round((OPEN_WIDTH - opening) / 0.0095))
        self._hold(KEEP, 5)

    def _hold(self, gripper, steps):
        goal = self.env.eef_pos()
        for _ in range(steps):
            self._step(KP * (goal - self.env.eef_pos()), gripper)

    def _step(self, delta, gripper, speed=1.0):
        """One control step: position ``delta`` (m, scaled so no axis exceeds ``speed`` of the
        controller's range), rotation back to top-down, the gripper command."""
        move = delta / MAX_DELTA
        peak = np.abs(move).max()
        if peak > speed:
            move *= speed / peak
        rot = _axis_angle(hand_rotation(self.yaw) @ self.env.eef_rot().T)
        self.env.step(np.concatenate([move, np.clip(rot / MAX_ROT_DELTA, -1, 1), [gripper]]))


# The Panda hand in the grip site's frame (fingers closing along world y), measured from its
# collision geoms: finger links reach 1.3 cm below the site, from 1 cm inside their pads to 3
# cm outside them along y (3.2-6.8 cm out when fully open); the palm spans 10.5 cm either side
# along y, 4 cm along x, from 2.4 cm above the site.
OPEN_WIDTH = 0.08         # m between the finger pads, fully open
FINGERS = {'dx': 0.015, 'inside': 0.01, 'outside': 0.03, 'below': 0.015}
PALM = {'dx': 0.04, 'dy': 0.105, 'above': 0.024}
# Openings tried, widest first: a hand pre-shaped to 5 cm reaches between a bowl's wall and a
# drawer's wall 1-2 cm from it, where the open hand's outer finger lands on the drawer.
OPENINGS = (OPEN_WIDTH, 0.05)


@dataclass
class GraspPlan:
    """A pick's grasp: the lifted target, the grip site's height, the hand's yaw about world
    z and its opening (m between the fingers as it descends)."""
    target: _Target
    z: float
    yaw: float
    opening: float = OPEN_WIDTH


YAWS = np.deg2rad([0.0, 30.0, -30.0, 60.0, -60.0, 90.0])   # candidates, preferred first
YAW_MARGIN = 0.005        # m: a rotated hand must fit this much better than the one before
UPRIGHT_FITS = 0.03       # m: the upright hand is kept unless it meets more than this
                          # (the measure is conservative: upright grasps that read 2-3 cm
                          # succeed, e.g. a bowl on a ramekin)


def hand_rotation(yaw: float) -> np.ndarray:
    """The top-down hand rotated by ``yaw`` about world z (fingers close along
    ``closing_axis(yaw)``)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ DOWN


def closing_axis(yaw: float) -> np.ndarray:
    """World direction (x, y) the fingers close along at ``yaw``."""
    return np.array([-np.sin(yaw), np.cos(yaw)])


def choose_grasp(points: np.ndarray, grasp: np.ndarray) -> tuple[float, float]:
    """``(yaw, opening)`` of the hand for a grasp at ``grasp``: of :data:`YAWS` x
    :data:`OPENINGS`, the pair whose hand meets the least of ``points`` (the depth's surfaces,
    :func:`hand_intrusion`), earlier pairs preferred unless a later one fits clearly better;
    the upright, fully open LIBERO hand unless it meets more than UPRIGHT_FITS."""
    near = points[np.hypot(*(points[:, :2] - grasp[:2]).T) < 0.13]
    if hand_intrusion(near, grasp) <= UPRIGHT_FITS:
        return 0.0, OPEN_WIDTH
    best, best_cost = (0.0, OPEN_WIDTH), np.inf
    for opening in OPENINGS:
        for yaw in YAWS:
            cost = hand_intrusion(near, grasp, yaw, opening)
            if cost < best_cost - YAW_MARGIN:
                best, best_cost = (float(yaw), opening), cost
    return best


def hand_intrusion(points: np.ndarray, grasp: np.ndarray, yaw: float = 0.0,
                   opening: float = OPEN_WIDTH) -> float:
    """How far (m) the surfaces in ``points`` ([N, 3] world) reach into the hand lowered to
    ``grasp`` (the grip site) at ``yaw``, ``opening`` m between its fingers: 0 when it fits.
    What lies between the fingers is not counted (that is what they grasp)."""
    d = points - grasp
    closing = closing_axis(yaw)
    across = np.array([closing[1], -closing[0]])
    ax, ay = np.abs(d[:, :2] @ across), np.abs(d[:, :2] @ closing)
    pad = opening / 2
    fingers = ((ax <= FINGERS['dx']) & (ay >= pad - FINGERS['inside'])
               & (ay <= pad + FINGERS['outside']))
    palm = (ax <= PALM['dx']) & (ay <= PALM['dy'])
    worst = 0.0
    if fingers.any():
        worst = max(worst, float(d[fingers, 2].max() + FINGERS['below']))
    if palm.any():
        worst = max(worst, float(d[palm, 2].max() - PALM['above']))
    return max(worst, 0.0)


def _axis_angle(R: np.ndarray) -> np.ndarray:
    """Rotation vector of a rotation matrix (small-angle safe)."""
    cos = np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    if angle < 1e-6:
        return axis / 2
    return axis * angle / (2 * np.sin(angle))
