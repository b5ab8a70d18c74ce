"""Tabletop scenes: objects in the cells of a 4x4 grid, seen from above, rendered with OpenCV.

Row 0 is the far side of the table (top of the image), column 0 the left. Every object stays
inside its cell (its bounding circle plus a margin fits the cell), so objects never overlap and
the cell an object is in is unambiguous. Images are RGB uint8.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from .actions import GRID, PRIMITIVES, PUSH_STEPS, parse_action_name

COLORS = ('red', 'green', 'blue', 'yellow', 'purple', 'orange')
SHAPES = ('cube', 'ball', 'triangle', 'ring')
# Reference RGB values: far apart in chromaticity so per-object jitter, global brightness and
# noise never make one colour look like another (a test classifies rendered pixels).
RGB = {'red': (215, 40, 40), 'green': (40, 165, 60), 'blue': (40, 85, 220),
       'yellow': (235, 210, 35), 'purple': (140, 55, 185), 'orange': (245, 135, 25)}
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel positions keep small shapes smooth
_ONE = 1 << _SHIFT
# Anti-aliased edges (and thick ring strokes) bleed up to ~2.6 px past the nominal radius,
# measured edge-to-edge over sizes and angles; keeping this clear of the cell border means no
# pixel of an object, however faint, lands in a neighbouring cell.
MARGIN_PX = 2.75


@dataclass
class TabletopConfig:
    """Generator settings. Sizes are fractions of half a cell; colours in 0..255 units."""

    image_size: int = 96
    min_objects: int = 2
    max_objects: int = 6
    size_range: tuple[float, float] = (0.5, 0.8)
    color_jitter: float = 15.0
    background_range: tuple[float, float] = (105.0, 195.0)
    background_tint: float = 12.0
    brightness_range: tuple[float, float] = (0.85, 1.15)
    light_gradient: float = 0.12
    noise_range: tuple[float, float] = (0.0, 5.0)
    confusable_rate: float = 0.6  # chance a distractor shares colour or shape with the target
    # Training split only: draw instructions from a fixed pool of this many phrasings per goal
    # (primitive, colour, shape) instead of the whole grammar; 0 = the whole grammar.
    phrasings: int = 0

    def __post_init__(self):
        if self.image_size < 48:
            raise ValueError(f'image_size must be at least 48, got {self.image_size}')
        if not 1 <= self.min_objects <= self.max_objects <= GRID * GRID:
            raise ValueError(f'need 1 <= min_objects <= max_objects <= {GRID * GRID}, got '
                             f'{self.min_objects}..{self.max_objects}')
        if self.phrasings < 0:
            raise ValueError(f'phrasings must be >= 0, got {self.phrasings}')
        lo, hi = self.size_range
        if not 0.2 <= lo <= hi <= 0.9:
            raise ValueError(f'size_range must lie in [0.2, 0.9], got {self.size_range}')


@dataclass
class SceneObject:
    """One object: ``size`` is its bounding-circle radius and ``center`` its (x, y), in px.

    Pixel coordinates follow OpenCV: pixel (i, j) has its centre at x = j, y = i, so cell
    ``(row, col)`` spans x in [col * step - 0.5, (col + 1) * step - 0.5).
    """

    color: str
    shape: str
    cell: tuple[int, int]
    size: float
    center: tuple[float, float]
    angle: float = 0.0
    rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)
    lifted: bool = False

    @property
    def pair(self) -> tuple[str, str]:
        """(colour, shape): what a referring expression names."""
        return self.color, self.shape


@dataclass
class Goal:
    """The instructed task: apply ``primitive`` to the object with this colour and shape."""

    primitive: str
    color: str
    shape: str


@dataclass
class Scene:
    """A table state; ``render`` turns it into an image, ``apply_action`` changes it."""

    objects: list[SceneObject]
    background: tuple[float, float, float]
    brightness: float = 1.0
    light: tuple[float, float] = (0.0, 0.0)
    noise_std: float = 0.0
    image_size: int = 96
    noise_seed: int = 0
    goal: Goal | None = None
    history: list[str] = field(default_factory=list)

    def object_at(self, row: int, col: int) -> SceneObject | None:
        """The object on the table (not lifted) in cell (row, col), or None."""
        for obj in self.objects:
            if obj.cell == (row, col) and not obj.lifted:
                return obj
        return None

    def find(self, color: str, shape: str) -> SceneObject | None:
        """The object with this colour and shape (unique in generated scenes), or None."""
        return next((o for o in self.objects if o.pair == (color, shape)), None)


def cell_size(image_size: int) -> float:
    """Side of one grid cell in pixels."""
    return image_size / GRID


def make_object(rng: np.random.Generator, config: TabletopConfig, color: str, shape: str,
                cell: tuple[int, int]) -> SceneObject:
    """Place an object of random size, jittered position, angle and colour inside ``cell``."""
    half = cell_size(config.image_size) / 2
    size = min(half * rng.uniform(*config.size_range), half - MARGIN_PX)
    slack = half - size - MARGIN_PX  # how far the centre may move and stay inside the cell
    row, col = cell
    cx = (col + 0.5) * 2 * half - 0.5 + rng.uniform(-slack, slack)
    cy = (row + 0.5) * 2 * half - 0.5 + rng.uniform(-slack, slack)
    rgb = np.clip(np.array(RGB[color], float) + rng.uniform(-1, 1, 3) * config.color_jitter,
                  0, 255)
    return SceneObject(color, shape, (int(row), int(col)), float(size), (float(cx), float(cy)),
                       float(rng.uniform(0, 360)), tuple(float(v) for v in rgb))


def random_appearance(rng: np.random.Generator, config: TabletopConfig) -> dict:
    """Background colour, brightness, light gradient and noise for one scene."""
    grey = rng.uniform(*config.background_range)
    # Low-saturation table colours, so the table is never confused with an object colour.
    background = np.clip(grey + rng.uniform(-1, 1, 3) * config.background_tint, 0, 255)
    return {'background': tuple(float(v) for v in background),
            'brightness': float(rng.uniform(*config.brightness_range)),
            'light': tuple(float(v) for v in rng.uniform(-1, 1, 2) * config.light_gradient),
            'noise_std': float(rng.uniform(*config.noise_range)),
            'image_size': config.image_size,
            'noise_seed': int(rng.integers(2**31))}


def _pts(points: np.ndarray) -> np.ndarray:
    return np.round(points * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _polygon(obj: SceneObject, scale: float, sides: int, radius: float) -> np.ndarray:
    theta = np.deg2rad(obj.angle) + np.arange(sides) * 2 * np.pi / sides
    cx, cy = ((v + 0.5) * scale - 0.5 for v in obj.center)
    radius = radius * scale
    return np.stack([cx + radius * np.cos(theta), cy + radius * np.sin(theta)], 1)


def draw_object(canvas: np.ndarray, obj: SceneObject, color=None, scale: float = 1.0) -> None:
    """Draw ``obj`` into ``canvas`` (anti-aliased); ``color`` overrides its own (for masks)."""
    flat = color is not None
    rgb = tuple(color) if flat else obj.rgb
    r = obj.size * scale
    center = tuple(int(round(((v + 0.5) * scale - 0.5) * _ONE)) for v in obj.center)
    aa = cv2.LINE_AA
    if obj.shape == 'ball':
        cv2.circle(canvas, center, int(round(r * _ONE)), rgb, -1, aa, _SHIFT)
        if not flat:  # a specular highlight makes it read as a sphere, not a disc
            hi = tuple(0.55 * np.array(rgb) + 0.45 * 255)
            spot = tuple(int(round(v - 0.3 * r * _ONE)) for v in center)
            cv2.circle(canvas, spot, int(round(0.3 * r * _ONE)), hi, -1, aa, _SHIFT)
    elif obj.shape == 'ring':
        thick = max(2, int(round(0.4 * r)))
        cv2.circle(canvas, center, int(round((r - thick / 2) * _ONE)), rgb, thick, aa, _SHIFT)
    elif obj.shape == 'triangle':
        cv2.fillPoly(canvas, [_pts(_polygon(obj, scale, 3, obj.size))], rgb, aa, _SHIFT)
    elif obj.shape == 'cube':
        square = _pts(_polygon(obj, scale, 4, obj.size * 0.95))
        cv2.fillPoly(canvas, [square], rgb, aa, _SHIFT)
        if not flat and r >= 6:  # a darker rim reads as the top face of a block
            rim = tuple(0.8 * np.array(rgb))
            cv2.polylines(canvas, [square], True, rim, 1, aa, _SHIFT)
    else:
        raise ValueError(f'unknown shape {obj.shape!r}; expected one of {SHAPES}')


@lru_cache(maxsize=1)
def _noise_pool() -> np.ndarray:
    # Drawing fresh Gaussians costs ~0.2 ms per 96 px image, more than the rest of a sample;
    # a random window of one fixed pool is as good per pixel and makes generation ~2x faster.
    return np.random.default_rng(12345).standard_normal(1 << 20, dtype=np.float32)


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    pool, n = _noise_pool(), int(np.prod(shape))
    if n > pool.size // 2:
        return rng.standard_normal(shape, dtype=np.float32)
    start = int(rng.integers(pool.size - n))
    return pool[start:start + n].reshape(shape)


@lru_cache(maxsize=8)
def _ramp(size: int) -> np.ndarray:
    return (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5


def render(scene: Scene, config: TabletopConfig | None = None,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """Render ``scene`` to an RGB uint8 image of ``config.image_size`` (default: the scene's).

    ``rng`` draws the sensor noise; without it the scene's own ``noise_seed`` is used, so
    re-rendering the same scene gives the same image. Lifted objects are not drawn.
    """
    size = config.image_size if config is not None else scene.image_size
    scale = size / scene.image_size
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = np.round(scene.background).astype(np.uint8)
    for obj in scene.objects:
        if not obj.lifted:
            draw_object(canvas, obj, scale=scale)
    ramp = _ramp(size)
    gain = scene.brightness * (1 + scene.light[0] * ramp[None, :] + scene.light[1] * ramp[:, None])
    image = canvas.astype(np.float32) * gain[:, :, None]
    if scene.noise_std > 0:
        rng = rng if rng is not None else np.random.default_rng(scene.noise_seed)
        image += _noise(rng, image.shape) * scene.noise_std
    return np.clip(image, 0, 255).astype(np.uint8)


def camera_frame(scene: Scene, config: TabletopConfig | None = None,
                 size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """What the simulator's camera publishes: ``render`` upscaled to ``size`` (width, height).

    The tabletop_sim node and the offline replay of its episodes both call this, so a model
    sees the same pixels in either.
    """
    image = render(scene, config)
    if image.shape[1::-1] == tuple(size):
        return image
    return cv2.resize(image, tuple(size), interpolation=cv2.INTER_LINEAR)


def apply_action(scene: Scene, action_name: str) -> tuple[Scene, bool]:
    """Carry out a library action on a copy of ``scene``; return (new_scene, success).

    ``pick`` lifts the object in the cell (it stays in ``objects`` with ``lifted=True`` and is
    no longer drawn). A push moves it one cell (left = col - 1, right = col + 1, forward =
    row - 1, back = row + 1); a push off the table or into an occupied cell leaves it where it
    is. An action on an empty cell changes nothing.

    ``success``: with a ``scene.goal`` (generated samples carry one), the acted cell held the
    goal's object and the primitive is the goal's, whether or not a push was blocked. Without
    a goal, the action changed the scene.
    """
    primitive, row, col = parse_action_name(action_name)
    new = copy.deepcopy(scene)
    new.history.append(action_name)
    obj = new.object_at(row, col)
    changed = False
    if obj is not None and primitive == 'pick':
        obj.lifted = changed = True
    elif obj is not None:
        d_row, d_col = PUSH_STEPS[primitive]
        r2, c2 = row + d_row, col + d_col
        if 0 <= r2 < GRID and 0 <= c2 < GRID and new.object_at(r2, c2) is None:
            step = cell_size(new.image_size)
            obj.cell = (r2, c2)
            obj.center = (obj.center[0] + d_col * step, obj.center[1] + d_row * step)
            changed = True
    if new.goal is None:
        return new, changed
    hit = obj is not None and obj.pair == (new.goal.color, new.goal.shape)
    return new, bool(hit and primitive == new.goal.primitive)


__all__ = ['COLORS', 'SHAPES', 'PRIMITIVES', 'GRID', 'RGB', 'TabletopConfig', 'SceneObject',
           'Goal', 'Scene', 'make_object', 'random_appearance', 'draw_object', 'render',
           'apply_action', 'cell_size']
