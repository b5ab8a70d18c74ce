"""Camera views of a tabletop scene, for multi-camera training and tests.

``top`` is the scene as ``render`` draws it: straight down, row 0 (the far side) at the top of
the image. ``oblique`` is the same render seen by a camera in front of the table looking down
at it at about 45 degrees: a fixed perspective warp (``cv2.warpPerspective``) that maps the
table onto a trapezoid whose far edge is narrower and higher than the near one, so far cells
come out smaller and flattened, and the floor around the table is a flat dark grey.

The oblique view is a pure function of the top render (no random draw), so adding it to a
sample leaves the generator's stream, and with it every other sample, unchanged.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

CAMERAS = ('top', 'oblique')
FLOOR_RGB = (55, 55, 60)
# The table's corners in the oblique image, as fractions of width and height: far-left,
# far-right, near-right, near-left. A pinhole camera 45 degrees above the near edge sees the
# far edge at ~60% of the near edge's width and the table's depth foreshortened by ~0.7.
OBLIQUE_CORNERS = ((0.20, 0.22), (0.80, 0.22), (0.99, 0.97), (0.01, 0.97))


def check_cameras(cameras, where: str = 'data.cameras') -> tuple[str, ...]:
    """``cameras`` as a tuple of known view names (non-empty, no repeats); ValueError naming
    ``where`` otherwise."""
    if isinstance(cameras, str) or not isinstance(cameras, (list, tuple)) or not cameras:
        raise ValueError(f'{where} must be a non-empty list of camera views out of '
                         f'{list(CAMERAS)}, got {cameras!r}')
    unknown = [c for c in cameras if c not in CAMERAS]
    if unknown:
        raise ValueError(f'{where}: unknown camera view(s) {unknown}; known: {list(CAMERAS)}')
    if len(set(cameras)) != len(cameras):
        raise ValueError(f'{where} names a view twice: {list(cameras)}')
    return tuple(cameras)


@lru_cache(maxsize=8)
def _homography(width: int, height: int) -> np.ndarray:
    src = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    dst = np.float32([[x * width, y * height] for x, y in OBLIQUE_CORNERS])
    return cv2.getPerspectiveTransform(src, dst)


def oblique_view(image: np.ndarray) -> np.ndarray:
    """The oblique camera's frame of a top-view render ``[H, W, 3]`` uint8 (same size)."""
    height, width = image.shape[:2]
    return cv2.warpPerspective(image, _homography(width, height), (width, height),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=FLOOR_RGB)


def render_views(image: np.ndarray, cameras=('top',)) -> np.ndarray:
    """One top-view render as ``[C, H, W, 3]``, one frame per camera of ``cameras``."""
    views = {'top': lambda im: im, 'oblique': oblique_view}
    return np.stack([views[c](image) for c in check_cameras(cameras, 'cameras')])
