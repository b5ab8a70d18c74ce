"""Freer scenes for demonstrations than LIBERO's reset gives, and the scene labels training
needs beyond the demonstrated point.

LIBERO's ``reset()`` only jitters each object inside a fixed region, so a model trained on
those resets alone can learn where the basket always is instead of what a basket looks like.
:func:`swap_objects` permutes the movable objects' places after a seeded reset: the same
objects and instruction, another arrangement (never an official initial state or a
LIBERO-PRO file). It is only offered where the instruction names objects by what they are
(libero_object: "the ketchup"); libero_spatial's instructions name a bowl by its relations
("between the plate and the ramekin"), which a permutation would falsify.

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
