"""Actions read from a bag: message -> name or vector, and the action libraries built from them.

* ``std_msgs/String``: an action *name*. The library is the one given (``--library``), or one
  built from the names seen: each name is its own description and its parameter vector is a
  one-hot over the names (nothing else is known about them).
* ``std_msgs/Float32MultiArray`` (and ``Float64MultiArray``): a parameter *vector*.
* ``geometry_msgs/Twist`` / ``TwistStamped``: the 6-vector ``[linear xyz, angular xyz]``.

Vector actions always keep the raw vector in ``action_vector``. Optionally (``--cluster K``)
they are also given names: k-means (k-means++ start, Lloyd iterations, in numpy) on the
standardised vectors yields K centres, which become a library (``cluster_00`` ...) whose
parameters are the centres in the original units, and each sample is named after its nearest
centre, so the library-contrastive trainer can use the data. Standardising first keeps one
unit (say m/s against rad/s) from deciding the clusters alone.
"""
from __future__ import annotations

import numpy as np

NAME_TYPES = ('std_msgs/msg/String',)
VECTOR_TYPES = ('std_msgs/msg/Float32MultiArray', 'std_msgs/msg/Float64MultiArray',
                'geometry_msgs/msg/Twist', 'geometry_msgs/msg/TwistStamped')
ACTION_TYPES = NAME_TYPES + VECTOR_TYPES
TWIST_PARAMETER_NAMES = ('linear_x', 'linear_y', 'linear_z', 'angular_x', 'angular_y',
                         'angular_z')


def action_payload(msg, msgtype: str) -> str | np.ndarray:
    """The action a message carries: a name (str) or a float32 vector."""
    if msgtype in NAME_TYPES:
        return str(msg.data)
    if msgtype.endswith('MultiArray'):
        return np.asarray(msg.data, np.float32).reshape(-1).copy()
    twist = msg.twist if msgtype.endswith('TwistStamped') else msg
    return np.array([twist.linear.x, twist.linear.y, twist.linear.z,
                     twist.angular.x, twist.angular.y, twist.angular.z], np.float32)


def default_parameter_names(msgtype: str, dim: int) -> list[str]:
    """Twist components for twists, else ``p0 .. p{dim-1}``."""
    if 'Twist' in msgtype:
        return list(TWIST_PARAMETER_NAMES)
    return [f'p{i}' for i in range(dim)]


def _sq_dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared distances [n, k] without an [n, k, D] temporary."""
    d2 = (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None]
    return np.maximum(d2, 0.0)


def kmeans(x: np.ndarray, k: int, seed: int = 0, iterations: int = 100):
    """k-means on the rows of ``x`` (already scaled as wished).

    k-means++ seeding, then Lloyd iterations until the assignment stops changing; a cluster
    that empties is re-seeded at the point farthest from its centre.

    Returns:
        (centres [k, D], labels [n] int64). ``k`` must not exceed the number of distinct rows.
    """
    x = np.asarray(x, np.float64)
    n = len(x)
    if not 1 <= k <= len(np.unique(x, axis=0)):
        raise ValueError(f'k={k} clusters need at least {k} distinct vectors')
    rng = np.random.default_rng(seed)
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.integers(n)]
    d2 = _sq_dist(x, centres[:1])[:, 0]
    for j in range(1, k):
        centres[j] = x[rng.choice(n, p=d2 / d2.sum())]
        d2 = np.minimum(d2, _sq_dist(x, centres[j:j + 1])[:, 0])
    labels = np.full(n, -1)
    for _ in range(iterations):
        d2 = _sq_dist(x, centres)
        new = d2.argmin(1)
        for j in range(k):
            if not np.any(new == j):  # re-seed an empty cluster with the worst-served point
                far = int(d2[np.arange(n), new].argmax())
                new[far] = j
                d2[far] = 0.0
        if np.array_equal(new, labels):
            break
        labels = new
        centres = np.stack([x[labels == j].mean(0) for j in range(k)])
    return centres, labels


def cluster_library(vectors: np.ndarray, k: int, parameter_names: list[str],
                    seed: int = 0, twist: bool = False):
    """Cluster action vectors into a ``k``-action library.

    Returns:
        (actions: list of library dicts ordered by cluster size, labels [n] naming each vector's
        action index in that list, sizes [k]).
    """
    vectors = np.asarray(vectors, np.float64)
    mean, std = vectors.mean(0), vectors.std(0)
    std[std < 1e-12] = 1.0  # a constant component carries no information; leave it unscaled
    centres, labels = kmeans((vectors - mean) / std, k, seed)
    centres = centres * std + mean
    sizes = np.bincount(labels, minlength=k)
    order = np.argsort(-sizes, kind='stable')  # cluster_00 is the most common action
    rank = np.empty(k, np.int64)
    rank[order] = np.arange(k)
    width = max(2, len(str(k - 1)))
    actions = []
    for i, j in enumerate(order):
        centre = [round(float(v), 6) for v in centres[j]]
        values = ', '.join(f'{p}={v:.3g}' for p, v in zip(parameter_names, centre, strict=True))
        entry = {'name': f'cluster_{i:0{width}d}',
                 'description': f'action cluster {i} of {k} ({int(sizes[j])} samples): {values}',
                 'params': centre}
        if twist:
            entry['twist'] = {'linear': centre[:3], 'angular': centre[3:6]}
        actions.append(entry)
    return actions, rank[labels], sizes[order]


def names_library(names: list[str]) -> list[dict]:
    """A library of the action names seen (sorted), each its own description, one-hot params."""
    names = sorted(set(names))
    return [{'name': n, 'description': n,
             'params': [1.0 if j == i else 0.0 for j in range(len(names))]}
            for i, n in enumerate(names)]
