"""The continuous tabletop task: objects anywhere on the table, actions ``(primitive, x, y)``.

Objects are placed at continuous positions (not cell-aligned; two may share a grid cell) with
their bounding circles apart, so the object under a point is unambiguous. An action is the
vector ``[one-hot primitive (5), x, y]`` of :data:`CONTINUOUS_SPACE`, (x, y) in [0, 1] image
coordinates as in the grid library, whose 80 actions are points of this space (cell centres).

Success: the point lies on the referred object (within its bounding circle, the radius
``SceneObject.size``) and the primitive is the asked one; a pick lifts the object, a push moves
it ``PUSH_DISTANCE`` table widths in its direction unless that leaves the table or hits another
object (then it stays, and a correct push still counts, as in the grid task). Position error is
measured in object radii: ``|point - centre| / size``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ...actions.space import ActionSpace, ContinuousDim
from .actions import PRIMITIVES, PUSH_STEPS, build_action_library
from .generator import _choose_pairs
from .language import make_instruction
from .scene import (
    MARGIN_PX,
    RGB,
    Goal,
    Scene,
    SceneObject,
    TabletopConfig,
    cell_size,
    random_appearance,
    render,
)
from .splits import get_split

CONTINUOUS_SPACE = ActionSpace('primitive', PRIMITIVES,
                               (ContinuousDim('x', 0.0, 1.0), ContinuousDim('y', 0.0, 1.0)))
PUSH_DISTANCE = 0.25       # of the table width: one grid cell, as a grid push
_STREAM = 7                # keeps continuous streams apart from the grid task's
_PLACEMENT_TRIES = 200


def continuous_library():
    """The grid library's 80 actions plus the continuous space (one file for both modes)."""
    from ...actions.library import ActionLibrary
    return ActionLibrary.from_dict({'version': 1,
                                    'parameter_names': CONTINUOUS_SPACE.parameter_names,
                                    'actions': build_action_library(),
                                    'space': CONTINUOUS_SPACE.to_dict()},
                                   'continuous tabletop library')


def action_vector(primitive: str, center: tuple[float, float], image_size: int) -> np.ndarray:
    """The space vector acting on pixel ``center`` (OpenCV convention, see ``SceneObject``)."""
    vector = np.zeros(len(PRIMITIVES) + 2, np.float32)
    vector[PRIMITIVES.index(primitive)] = 1.0
    vector[-2:] = [(center[0] + 0.5) / image_size, (center[1] + 0.5) / image_size]
    return vector


def action_point(vector, image_size: int) -> tuple[str, np.ndarray]:
    """(primitive, pixel point) of a space vector."""
    v = np.asarray(vector, np.float64).reshape(-1)
    return PRIMITIVES[int(np.argmax(v[:len(PRIMITIVES)]))], v[-2:] * image_size - 0.5


def object_under(scene: Scene, point: np.ndarray) -> SceneObject | None:
    """The object on the table whose bounding circle holds ``point`` (px), or None."""
    for obj in scene.objects:
        if not obj.lifted and np.hypot(*(point - obj.center)) <= obj.size:
            return obj
    return None


def position_error(target: SceneObject, vector, image_size: int) -> float:
    """Distance from the action's point to the target's centre, in target radii."""
    _, point = action_point(vector, image_size)
    return float(np.hypot(*(point - target.center)) / target.size)


def _fits(scene: Scene, moved: SceneObject, center: np.ndarray) -> bool:
    size = scene.image_size
    lo, hi = moved.size + MARGIN_PX - 0.5, size - 0.5 - moved.size - MARGIN_PX
    if not (lo <= center[0] <= hi and lo <= center[1] <= hi):
        return False
    return all(np.hypot(*(center - o.center)) >= o.size + moved.size + 2 * MARGIN_PX
               for o in scene.objects if o is not moved and not o.lifted)


def apply_vector(scene: Scene, vector) -> tuple[Scene, bool]:
    """Carry out a continuous action on a copy of ``scene``; return (new_scene, success).

    ``success`` with a goal: the point is on the goal's object and the primitive is the goal's.
    Without a goal: the action changed the scene.
    """
    primitive, point = action_point(vector, scene.image_size)
    new = copy.deepcopy(scene)
    obj = object_under(new, point)
    changed = False
    if obj is not None and primitive == 'pick':
        obj.lifted = changed = True
    elif obj is not None:
        d_row, d_col = PUSH_STEPS[primitive]
        step = PUSH_DISTANCE * new.image_size
        center = np.array(obj.center) + step * np.array([d_col, d_row])
        if _fits(new, obj, center):
            obj.center = (float(center[0]), float(center[1]))
            obj.cell = _cell_of(obj.center, new.image_size)
            changed = True
    if new.goal is None:
        return new, changed
    hit = obj is not None and obj.pair == (new.goal.color, new.goal.shape)
    return new, bool(hit and primitive == new.goal.primitive)


def _cell_of(center: tuple[float, float], image_size: int) -> tuple[int, int]:
    step = cell_size(image_size)
    clamp = lambda v: int(min(3, max(0, (v + 0.5) // step)))  # noqa: E731
    return clamp(center[1]), clamp(center[0])


def place_objects(rng: np.random.Generator, config: TabletopConfig,
                  pairs: list[tuple[str, str]]) -> list[SceneObject]:
    """Objects of the grid task's sizes at uniform positions, bounding circles apart."""
    half = cell_size(config.image_size) / 2
    for _ in range(_PLACEMENT_TRIES):
        objects: list[SceneObject] = []
        for color, shape in pairs:
            size = min(half * rng.uniform(*config.size_range), half - MARGIN_PX)
            lo = size + MARGIN_PX - 0.5
            hi = config.image_size - 0.5 - size - MARGIN_PX
            for _ in range(_PLACEMENT_TRIES):
                center = rng.uniform(lo, hi, 2)
                if all(np.hypot(*(center - o.center)) >= o.size + size + 2 * MARGIN_PX
                       for o in objects):
                    break
            else:
                break   # this layout is too crowded: start the scene again
            rgb = np.clip(np.array(RGB[color], float)
                          + rng.uniform(-1, 1, 3) * config.color_jitter, 0, 255)
            objects.append(SceneObject(color, shape, _cell_of(center, config.image_size),
                                       float(size), (float(center[0]), float(center[1])),
                                       float(rng.uniform(0, 360)),
                                       tuple(float(v) for v in rgb)))
        if len(objects) == len(pairs):
            return objects
    raise ValueError(f'could not place {len(pairs)} objects apart on a {config.image_size} px '
                     'table; lower max_objects or size_range')


@dataclass
class ContinuousSample:
    """One sample: ``vector`` acts on the centre of ``target`` with the asked primitive."""

    image: np.ndarray
    instruction: str
    vector: np.ndarray
    primitive: str
    target: SceneObject
    scene: Scene
    template: str = ''

    def judge(self, vector) -> bool:
        return apply_vector(self.scene, vector)[1]

    def others(self) -> list[SceneObject]:
        return [o for o in self.scene.objects if o is not self.target]


class ContinuousTabletopGenerator:
    """Seeded samples of the continuous task for one split (the grid task's split rules:
    target pairs, held-out pairs excluded, template sets), from a stream of its own."""

    def __init__(self, config: TabletopConfig | None = None, split: str = 'train',
                 seed: int = 0):
        if int(seed) < 0:
            raise ValueError(f'seed must be non-negative, got {seed}')
        self.config = config if config is not None else TabletopConfig()
        self.split = get_split(split)
        self.rng = np.random.default_rng(
            np.random.SeedSequence([int(seed), self.split.code, _STREAM]))
        self.num_objects = self.split.objects or (self.config.min_objects,
                                                  self.config.max_objects)

    def sample(self) -> ContinuousSample:
        rng, cfg = self.rng, self.config
        target_pair = self.split.targets[int(rng.integers(len(self.split.targets)))]
        n = int(rng.integers(self.num_objects[0], self.num_objects[1] + 1))
        pairs = _choose_pairs(rng, target_pair, n, cfg.confusable_rate, self.split.excluded)
        objects = place_objects(rng, cfg, pairs)
        target = objects[0]
        primitive = PRIMITIVES[int(rng.integers(len(PRIMITIVES)))]
        scene = Scene([objects[i] for i in rng.permutation(n)],
                      goal=Goal(primitive, *target.pair), **random_appearance(rng, cfg))
        pool = cfg.phrasings if self.split.name == 'train' else 0
        instruction, template = make_instruction(rng, primitive, target.color, target.shape,
                                                 self.split.templates, pool)
        image = render(scene, cfg, rng)
        return ContinuousSample(image, instruction,
                                action_vector(primitive, target.center, cfg.image_size),
                                primitive, target, scene, template)

    def samples(self, n: int):
        for _ in range(n):
            yield self.sample()


__all__ = ['CONTINUOUS_SPACE', 'PUSH_DISTANCE', 'ContinuousSample',
           'ContinuousTabletopGenerator', 'action_point', 'action_vector', 'apply_vector',
           'continuous_library', 'object_under', 'place_objects', 'position_error']
