"""Naming vectors by the library action nearest to them.

A dataset written by someone else (a LeRobot recording, a teleoperation log) carries action
*vectors*; the library-contrastive trainer needs action *names*. Each vector takes the name
of the library action with the nearest parameters, but only when that action is
unambiguously nearest: by default within half the smallest gap between two library actions,
so a vector halfway between two actions is left unnamed rather than guessed.
"""
from __future__ import annotations

import math

import numpy as np

_CHUNK = 65536   # vectors per block: bounds the [N, K] distance matrix's memory


def half_min_gap(params: np.ndarray) -> float:
    """Half the smallest distance between two different library params (inf if < 2)."""
    unique = np.unique(np.asarray(params, np.float64), axis=0)
    if len(unique) < 2:
        return math.inf
    square = (unique**2).sum(1)
    d2 = square[:, None] + square[None, :] - 2 * unique @ unique.T   # [K, K], not [K, K, D]
    np.fill_diagonal(d2, np.inf)
    return float(np.sqrt(max(d2.min(), 0.0))) / 2


def nearest_actions(vectors: np.ndarray, params: np.ndarray,
                    max_distance: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The index of the nearest library action for each vector, and the distance to it.

    Args:
        vectors: ``[N, D]`` action vectors.
        params: ``[K, D]`` library parameters.
        max_distance: farther vectors get index -1; None = :func:`half_min_gap` of ``params``,
            ``math.inf`` = always the nearest.

    Returns:
        ``(index [N] int64, -1 where too far; distance [N] float64)``.
    """
    params = np.asarray(params, np.float64)
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or params.ndim != 2 or vectors.shape[1] != params.shape[1]:
        raise ValueError(f'vectors {vectors.shape} and library params {params.shape} must be '
                         '[N, D] and [K, D] with the same D')
    if max_distance is None:
        max_distance = half_min_gap(params)
    best = np.empty(len(vectors), np.int64)
    distance = np.empty(len(vectors))
    square = (params**2).sum(1)
    for start in range(0, len(vectors), _CHUNK):
        v = vectors[start:start + _CHUNK].astype(np.float64)
        d2 = (v**2).sum(1)[:, None] - 2 * v @ params.T + square[None, :]
        best[start:start + len(v)] = d2.argmin(1)
        distance[start:start + len(v)] = np.sqrt(np.maximum(d2.min(1), 0.0))
    best[distance > max_distance] = -1
    return best, distance
