"""Dataset statistics in LeRobot's shapes (its ``compute_stats.py``), exact over the frames
written, and ``info.json``'s ``splits``.
"""
from __future__ import annotations

import numpy as np

from . import lerobot_layout as L

# LeRobot's image statistics sample frames no larger than ~150 px (compute_stats
# auto_downsample_height_width); histograms of a strided view are as good and cheaper.
STATS_IMAGE_SIZE = 150


def vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """min/max/mean/std/count and quantiles of ``values`` [N, D], each of shape [D]
    (count [1]). Exact over the frames given (LeRobot estimates quantiles from histograms)."""
    values = values.astype(np.float64)
    stats = {'min': values.min(0), 'max': values.max(0), 'mean': values.mean(0),
             'std': values.std(0), 'count': np.array([len(values)])}
    for key, q in zip(L.QUANTILE_KEYS, np.quantile(values, L.QUANTILES, axis=0), strict=True):
        stats[key] = q
    return stats


def image_stats(histogram: np.ndarray, frames: int) -> dict[str, np.ndarray]:
    """Per-channel stats of RGB pixels in [0, 1], shape [3, 1, 1] (count [1] = frames), from
    a [3, 256] histogram of 0-255 values: exact, quantiles included."""
    levels = np.arange(256) / 255.0
    total = histogram.sum(1)
    mean = histogram @ levels / total
    std = np.sqrt(np.maximum(histogram @ levels**2 / total - mean**2, 0.0))
    present = histogram > 0
    cum = np.cumsum(histogram, 1)
    stats = {'min': levels[present.argmax(1)], 'max': levels[255 - present[:, ::-1].argmax(1)],
             'mean': mean, 'std': std}
    shaped = {k: v.reshape(3, 1, 1) for k, v in stats.items()}
    shaped['count'] = np.array([frames])
    for key, q in zip(L.QUANTILE_KEYS, L.QUANTILES, strict=True):
        index = np.array([np.searchsorted(cum[c], q * total[c]) for c in range(3)])
        shaped[key] = levels[np.minimum(index, 255)].reshape(3, 1, 1)
    return shaped


def count_pixels(total: np.ndarray, episode: np.ndarray, frame: np.ndarray) -> None:
    """Add a frame's pixels (strided down to ~150 px for large frames) to both histograms."""
    step = max(1, max(frame.shape[:2]) // STATS_IMAGE_SIZE) if max(frame.shape[:2]) >= 300 else 1
    view = frame[::step, ::step]
    for c in range(3):
        counts = np.bincount(view[..., c].ravel(), minlength=256)
        total[c] += counts
        episode[c] += counts


def episode_splits(splits: list[set]) -> dict[str, str]:
    """``info.json`` ``splits``: episode ranges per split name when every episode has one
    split and each split's episodes are contiguous; otherwise LeRobot's ``{"train": "0:N"}``."""
    everything = {'train': f'0:{len(splits)}'}
    if any(len(s) != 1 or None in s for s in splits):
        return everything
    names = [str(next(iter(s))) for s in splits]
    ranges, start = {}, 0
    for i in range(1, len(names) + 1):
        if i == len(names) or names[i] != names[start]:
            if names[start] in ranges:
                return everything
            ranges[names[start]] = f'{start}:{i}'
            start = i
    return ranges
