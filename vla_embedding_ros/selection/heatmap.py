"""The score of a continuous action over a plane of its space: what sampled mode "sees".

For the debug view of ``candidate_mode: sampled``: the model is evaluated on a regular grid of
two continuous dimensions (``x``, ``y`` of the tabletop space: the table in image
coordinates), with the discrete choice and every other dimension held at a given vector's
values (the chosen action's), so a person sees where on the table the model puts its mass for
the chosen primitive. One grid is ``resolution ** 2`` candidates through the action encoder
plus one query (frames + instruction, the instruction's features cached), so it costs about
one decision's first round; callers build it only when someone looks. No ROS here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..actions.space import ActionSpace

MAX_RESOLUTION = 256


@dataclass
class ScoreMap:
    """Logits over a grid of cell centres: ``logits[row, col]``, columns along ``dims[0]``
    (low to high), rows along ``dims[1]`` (low to high; absent for a one-dimensional space)."""

    logits: np.ndarray
    dims: tuple[int, ...]          # indices into space.dims
    option: str                    # the discrete choice held fixed ('' without a choice)
    seconds: float = 0.0           # what computing it cost


def plane_vectors(space: ActionSpace, vector: Any, resolution: int,
                  dims: Sequence[int] = (0, 1)) -> torch.Tensor:
    """``[rows * cols, param_dim]`` vectors: ``vector`` with ``dims`` swept over cell centres
    of their bounds (rows = ``dims[1]``, row-major), float32 on the CPU."""
    if isinstance(resolution, bool) or int(resolution) != resolution or \
            not 2 <= resolution <= MAX_RESOLUTION:
        raise ValueError(f'heatmap resolution must be an integer in [2, {MAX_RESOLUTION}], '
                         f'got {resolution!r}')
    dims = tuple(int(d) for d in dims)
    if not 1 <= len(dims) <= 2 or any(not 0 <= d < len(space.dims) for d in dims):
        raise ValueError(f'heatmap dims {dims} must name one or two of the space\'s '
                         f'{len(space.dims)} continuous dimensions')
    base = space.check_vector(vector, 'heatmap vector')
    low, high = space.bounds()
    centres = [low[d] + (np.arange(resolution, dtype=np.float32) + 0.5) / resolution
               * (high[d] - low[d]) for d in dims]
    rows = centres[1] if len(dims) == 2 else np.zeros(1, np.float32)
    cols = centres[0]
    grid = np.repeat(base[None], len(rows) * len(cols), axis=0)
    start = len(space.options)
    grid[:, start + dims[0]] = np.tile(cols, len(rows))
    if len(dims) == 2:
        grid[:, start + dims[1]] = np.repeat(rows, len(cols))
    return torch.from_numpy(grid)


def score_map(selector: Any, images: np.ndarray | Sequence[np.ndarray], instruction: str,
              vector: Any, resolution: int = 32, color: str = 'rgb',
              dims: Sequence[int] | None = None,
              cameras: Sequence[int] | None = None) -> ScoreMap:
    """The model's logits over a ``resolution`` x ``resolution`` grid of the library space's
    first two continuous dimensions (or ``dims``), the rest of ``vector`` held fixed.

    Raises:
        ValueError: no space in the selector's library, a bad vector, resolution or dims,
            non-finite scores.
    """
    start = time.perf_counter()
    library = selector.library
    space = None if library is None else library.space
    if space is None:
        raise ValueError("a score map needs a library with a continuous 'space'")
    if dims is None:
        dims = (0, 1) if len(space.dims) >= 2 else (0,)
    candidates = plane_vectors(space, vector, resolution, dims)
    with torch.inference_mode():
        pixels = selector.preprocess(images, color)
        prepared = selector.text_features(instruction.strip())
        if cameras is None:
            query = selector.backend.query(pixels, prepared)
        else:
            query = selector.backend.query(pixels, prepared, cameras=list(cameras))
        model = selector.model
        logits = model.score(query, model.encode_actions(candidates.to(model.device), None))[0]
        logits = logits.float().cpu().numpy()
    if not np.isfinite(logits).all():
        raise ValueError('the model scored part of the heatmap as non-finite (NaN or inf)')
    cols = resolution
    rows = resolution if len(dims) == 2 else 1
    option = ''
    if space.options:
        option = space.options[int(np.argmax(np.asarray(vector)[:len(space.options)]))]
    return ScoreMap(logits.reshape(rows, cols), tuple(int(d) for d in dims), option,
                    time.perf_counter() - start)


def unit_coordinates(space: ActionSpace, vectors: Any,
                     dims: Sequence[int] = (0, 1)) -> np.ndarray:
    """``[N, 2]`` positions of ``vectors`` in the plane of ``dims``, each scaled to [0, 1] by
    its bounds (0.5 for a missing second dimension): where to draw them on the heatmap."""
    v = np.asarray(vectors, np.float32).reshape(-1, space.param_dim)
    low, high = space.bounds()
    start = len(space.options)
    out = np.full((v.shape[0], 2), 0.5, np.float32)
    for axis, d in enumerate(dims):
        out[:, axis] = (v[:, start + d] - low[d]) / (high[d] - low[d])
    return out


def option_mask(space: ActionSpace, vectors: Any, option: str) -> np.ndarray:
    """``[N]`` bool: which ``vectors`` choose ``option`` (all of them without a choice)."""
    v = np.asarray(vectors, np.float32).reshape(-1, space.param_dim)
    if not space.options:
        return np.ones(v.shape[0], bool)
    return np.argmax(v[:, :len(space.options)], axis=1) == space.options.index(option)
