"""Seeded generator of tabletop samples: scene, image, instruction and ground-truth action."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .actions import ACTION_INDEX, GRID, PRIMITIVES, action_name
from .language import make_instruction
from .scene import (
    Goal,
    Scene,
    SceneObject,
    TabletopConfig,
    apply_action,
    make_object,
    random_appearance,
    render,
)
from .splits import ALL_PAIRS, get_split, split_rng


@dataclass
class Sample:
    """One benchmark sample. ``target`` is the referred object (unique colour + shape)."""

    image: np.ndarray
    instruction: str
    action_name: str
    action_index: int
    primitive: str
    target: SceneObject
    scene: Scene
    template: str = ''

    def judge(self, action_name: str) -> bool:
        """Whether choosing ``action_name`` succeeds: the target's cell, the asked primitive."""
        return judge(self, action_name)


def judge(sample: Sample, action_name: str) -> bool:
    """Success of ``action_name`` for ``sample``, as the simulator's ``apply_action`` rates it."""
    return apply_action(sample.scene, action_name)[1]


def _choose_pairs(rng: np.random.Generator, target: tuple[str, str], n: int,
    confusable_rate: float, excluded: tuple = ()) -> list[tuple[str, str]]:
    """Target first, then distractors with unique (colour, shape): no two could be meant."""
    chosen = [target]
    while len(chosen) < n:
        pool = [p for p in ALL_PAIRS if p not in chosen and p not in excluded]
        if rng.random() < confusable_rate:
            # Sharing the colour or the shape forces the model to ground both words.
            close = [p for p in pool if p[0] == target[0] or p[1] == target[1]]
            pool = close or pool
        chosen.append(pool[int(rng.integers(len(pool)))])
    return chosen


class TabletopGenerator:
    """Draws samples of one split from a seeded stream (same seed and split, same samples).

    Args:
        config: scene and rendering settings (``TabletopConfig()`` by default).
        split: one of ``train``, ``val``, ``unseen_combo``, ``paraphrase``, ``reworded``,
            ``clutter``.
        seed: non-negative integer; each split has its own stream for the same seed.
    """

    def __init__(self, config: TabletopConfig | None = None, split: str = 'train',
    seed: int = 0):
        if int(seed) < 0:
            raise ValueError(f'seed must be non-negative, got {seed}')
        self.config = config if config is not None else TabletopConfig()
        self.split = get_split(split)
        self.seed = int(seed)
        self.rng = split_rng(split, seed)
        lo, hi = self.split.objects or (self.config.min_objects, self.config.max_objects)
        self.num_objects = (lo, hi)

    def scene(self) -> tuple[Scene, SceneObject, str]:
        """A random scene with a goal; returns (scene, target object, primitive)."""
        rng, cfg = self.rng, self.config
        targets = self.split.targets
        target_pair = targets[int(rng.integers(len(targets)))]
        n = int(rng.integers(self.num_objects[0], self.num_objects[1] + 1))
        pairs = _choose_pairs(rng, target_pair, n, cfg.confusable_rate, self.split.excluded)
        cells = rng.choice(GRID * GRID, size=n, replace=False)
        objects = [make_object(rng, cfg, c, s, (int(k) // GRID, int(k) % GRID))
                   for (c, s), k in zip(pairs, cells, strict=True)]
        target = objects[0]
        order = rng.permutation(n)  # so nothing downstream can read the target off index 0
        primitive = PRIMITIVES[int(rng.integers(len(PRIMITIVES)))]
        scene = Scene([objects[i] for i in order], goal=Goal(primitive, *target.pair),
                      **random_appearance(rng, cfg))
        return scene, target, primitive

    def sample(self) -> Sample:
        """The next sample of the stream."""
        scene, target, primitive = self.scene()
        pool = self.config.phrasings if self.split.name == 'train' else 0
        instruction, template = make_instruction(self.rng, primitive, target.color,
                                                 target.shape, self.split.templates, pool)
        name = action_name(primitive, *target.cell)
        image = render(scene, self.config, self.rng)
        return Sample(image, instruction, name, ACTION_INDEX[name], primitive, target, scene,
    template)

    def samples(self, n: int) -> Iterator[Sample]:
        """Yield the next ``n`` samples."""
        for _ in range(n):
            yield self.sample()

    def __iter__(self) -> Iterator[Sample]:
        while True:
            yield self.sample()

    def batch(self, n: int) -> tuple[np.ndarray, list[str], np.ndarray]:
        """``n`` samples as (images uint8 [n, H, W, 3], instructions, action indices int64)."""
        return collate(list(self.samples(n)))


def collate(samples: list[Sample]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Samples as (images uint8 [n, H, W, 3], instructions, action indices int64)."""
    return (np.stack([s.image for s in samples]), [s.instruction for s in samples],
            np.array([s.action_index for s in samples], np.int64))


__all__ = ['Sample', 'judge', 'TabletopGenerator', 'collate']
