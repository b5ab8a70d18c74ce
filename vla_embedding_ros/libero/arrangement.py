"""Freer scenes for demonstrations than LIBERO's reset gives, and the scene labels training
needs beyond the demonstrated point.

LIBERO's ``reset()`` only jitters each object inside a fixed region, so a model trained on
those resets alone can learn where the basket always is instead of what a basket looks like.
:func:`swap_objects` permutes the movable objects' places after a seeded reset: the same
objects and instruction, another arrangement (never an official initial state or a
LIBERO-PRO file). It is only offered where the instruction names objects by what they are
(libero_object: "the ketchup"); libero_spatial's instructions name a bowl by its relations
("between the plate and the ramekin"), which a permutation would falsify.

:func:`move_to_free_spot` moves one object to a free spot of the table in view: between the
pick and the place, the place target (the plate, the basket) can be anywhere without
falsifying any instruction (the relation named the bowl, which is now in the hand), so the
place decision has to find the target by what it looks like, not where it always stood.

:func:`scene_labels` gives, per decision, the other objects' image points and the target's
radius in the image: what the counter-example objective needs (``training/
counter_examples.py``). Simulator state, so training labels only: a policy never sees them.
"""
from __future__ import annotations

import numpy as np

from .camera import Frame
from .env import LiberoEnv
from .expert import body_box

SWAPPABLE_SUITES = ('libero_object',)
LIFT = 0.005           # m: a swapped object starts this far above its new spot, then settles
PICK_RADIUS = 0.015    # m: a pick within this of the expert's point grasps the same way
PLACE_RADIUS = 0.02    # m: LIBERO's "on"/"in" accept the object's middle within ~3 cm
SPOT_MARGIN = 0.08     # m: free spots lie within this of the table objects' spread ...
SPOT_REACH = (0.45, 0.85)   # ... this far from the arm's base (m; the official scenes'
                       # objects lie 0.45-0.8 m off it) ...
SPOT_CLEARANCE = 0.02  # ... keep this gap to every other body's footprint ...
HAND_CLEARANCE = 0.15  # ... lie this far from under the hand ...
IMAGE_MARGIN = 0.05    # ... inside the image by this (normalised) ...
HIDDEN_BY = 0.01       # ... and seen: a point of its top is hidden when something lies this
VISIBLE_FRACTION = 0.8  # much nearer the camera; this share of them must be seen
SPOT_TRIES = 400


class NoFreeSpot(RuntimeError):
    """No spot of the table could take the object (the scene is too crowded)."""


def swap_objects(env: LiberoEnv, rng: np.random.Generator) -> list[str]:
    """Permute the horizontal places of the scene's movable objects (each keeps its own
    height above the floor and its orientation); return the new order of names. Call right
    after a reset, before :meth:`LiberoEnv.settle`."""
    renv = env.robosuite_env
    sim = renv.sim
    names = list(renv.objects_dict)
    addrs = [sim.model.get_joint_qpos_addr(renv.objects_dict[n].joints[-1])[0] for n in names]
    places = np.array([sim.data.qpos[a:a + 2] for a in addrs])
    order = rng.permutation(len(names))
    for addr, source in zip(addrs, order, strict=True):
        sim.data.qpos[addr:addr + 2] = places[source]
        sim.data.qpos[addr + 2] += LIFT
    sim.forward()
    return [names[i] for i in order]


def move_to_free_spot(env: LiberoEnv, name: str, rng: np.random.Generator,
                      ignore: tuple[str, ...] = ()) -> np.ndarray:
    """Move object ``name`` (keeping its height and orientation) to a random free spot of the
    table: among the spread of the objects resting on the table (plus SPOT_MARGIN), within
    SPOT_REACH of the arm's base, clear of every other body's footprint (fixtures included,
    ``ignore`` left out: the object in the hand), away from under the hand, and seen by the
    agentview camera (its top inside the image and not hidden behind the arm: checked on a
    rendered depth). Returns the new ``(x, y)``; the caller lets it settle.

    Raises:
        NoFreeSpot: none found in SPOT_TRIES draws (the object is put back).
    """
    renv = env.robosuite_env
    sim = renv.sim
    joint = renv.objects_dict[name].joints[-1]
    addr = sim.model.get_joint_qpos_addr(joint)[0]
    vel = sim.model.get_joint_qvel_addr(joint)[0]
    start = sim.data.qpos[addr:addr + 3].copy()
    low, high = body_box(env, name)
    half = (high[:2] - low[:2]) / 2
    offset = (low[:2] + high[:2]) / 2 - start[:2]
    boxes = {n: body_box(env, n) for n in renv.obj_body_id if n != name and n not in ignore}
    floor = min(b[0][2] for b in boxes.values())
    on_table = np.array([(b[0][:2] + b[1][:2]) / 2 for b in boxes.values()
                         if b[0][2] < floor + 0.02] + [(low[:2] + high[:2]) / 2])
    area_low, area_high = on_table.min(0) - SPOT_MARGIN, on_table.max(0) + SPOT_MARGIN
    base, hand = env.robot_base()[:2], env.eef_pos()[:2]
    cal = env.calibration()
    # the top face, inset: what the camera must see of the object at its new spot
    inset = np.array([[sx, sy] for sx in (-0.6, 0.0, 0.6) for sy in (-0.6, 0.0, 0.6)])
    for _ in range(SPOT_TRIES):
        centre = rng.uniform(area_low, area_high)
        if not SPOT_REACH[0] <= np.hypot(*(centre - base)) <= SPOT_REACH[1]:
            continue
        if np.hypot(*(centre - hand)) < HAND_CLEARANCE:
            continue
        if any(np.all(centre - half - SPOT_CLEARANCE < b_high[:2])
               and np.all(b_low[:2] < centre + half + SPOT_CLEARANCE)
               for b_low, b_high in boxes.values()):
            continue
        top = np.column_stack([centre + inset * half, np.full(len(inset), high[2])])
        pixels, depth = cal.world_to_pixel(top)
        uv = pixels / [cal.width, cal.height]
        if not np.all((uv > IMAGE_MARGIN) & (uv < 1 - IMAGE_MARGIN)):
            continue
        _put(sim, addr, vel, np.array([*(centre - offset), start[2] + LIFT]))
        seen = env.render().depth[pixels[:, 1].astype(int), pixels[:, 0].astype(int)]
        if np.mean(seen > depth - HIDDEN_BY) >= VISIBLE_FRACTION:
            return centre
    _put(sim, addr, vel, start)
    raise NoFreeSpot(f'no free spot in view for {name} in {SPOT_TRIES} draws')


def _put(sim, qpos_addr: int, qvel_addr: int, xyz) -> None:
    sim.data.qpos[qpos_addr:qpos_addr + 3] = xyz
    sim.data.qvel[qvel_addr:qvel_addr + 6] = 0.0
    sim.forward()


def _point(frame: Frame, world) -> tuple[float, float]:
    (x, y), _ = frame.calibration.world_to_pixel(np.asarray(world, float))
    return frame.calibration.pixel_to_normalised(float(x), float(y))


def image_radius(frame: Frame, world, metres: float) -> float:
    """How far (normalised image units) ``metres`` sideways of ``world`` appears from it."""
    u0, v0 = _point(frame, world)
    u1, v1 = _point(frame, np.asarray(world, float) + [0.0, metres, 0.0])
    return float(np.hypot(u1 - u0, v1 - v0))


def scene_labels(env: LiberoEnv, frame: Frame, primitive: str, point,
                 exclude: tuple[str, ...]) -> dict:
    """``{'radius': r, 'others': [[u, v], ...]}`` for one decision: ``others`` the image
    points of the tops of every object but ``exclude`` (the asked one, the held one), in
    the image; ``radius`` how far around ``point`` (normalised) still does the same."""
    cal = frame.calibration
    # a point off the image (an object out of view: the executor will refuse it, and the
    # episode is not kept) is measured at the nearest pixel
    x, y = cal.normalised_to_pixel(*point)
    at = frame.lift(min(max(x, 0.5), cal.width - 0.5), min(max(y, 0.5), cal.height - 0.5))
    metres = PICK_RADIUS if primitive == 'pick' else PLACE_RADIUS
    others = []
    for name in env.robosuite_env.obj_body_id:
        if name in exclude:
            continue
        low, high = body_box(env, name)
        u, v = _point(frame, [(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, high[2]])
        if 0.0 <= u < 1.0 and 0.0 <= v < 1.0:
            others.append([round(u, 5), round(v, 5)])
    return {'radius': round(image_radius(frame, at, metres), 5), 'others': others}
