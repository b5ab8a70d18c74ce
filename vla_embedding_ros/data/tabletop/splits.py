"""Benchmark splits of the tabletop task, all defined here.

=============  ===============================  ==================  ===========
split          target colour-shape pairs        templates           objects
=============  ===============================  ==================  ===========
train          the 20 seen pairs                training            config (2-6)
val            the 20 seen pairs                training            config (2-6)
unseen_combo   the 4 HELDOUT_PAIRS              training            config (2-6)
paraphrase     the 20 seen pairs                held-out only       config (2-6)
reworded       the 20 seen pairs                new words (below)   config (2-6)
clutter        the 20 seen pairs                training            7-10
=============  ===============================  ==================  ===========

``paraphrase`` recombines training words; ``reworded`` says verbs, sentence frames and (in half
of its samples each) colour and shape synonyms that training never says (``language`` lists
them). Both keep the seen pairs, so they measure language alone.

Held-out pairs never appear in the seen-pair splits, not even as distractors: a pair that is
always on the table and never the answer teaches "this object is never meant", a shortcut that
held the shipped model at 1% on ``unseen_combo`` (below chance). Every colour and every shape is
still a target in training through its other pairs, so the model must compose them for
``unseen_combo``, whose distractors may be any pair. Each split
draws from its own random stream (``numpy.random.SeedSequence([seed, code])``), so ``val``
never repeats ``train`` samples for the same seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scene import COLORS, SHAPES

# One per colour family and one per shape, so every colour and every shape stays a target in
# training through its other pairs.
HELDOUT_PAIRS = (('red', 'ring'), ('green', 'triangle'), ('blue', 'ball'), ('purple', 'cube'))
ALL_PAIRS = tuple((c, s) for c in COLORS for s in SHAPES)
SEEN_PAIRS = tuple(p for p in ALL_PAIRS if p not in HELDOUT_PAIRS)


@dataclass(frozen=True)
class SplitSpec:
    """What a split draws: target pairs, template set, object-count override, stream code."""

    name: str
    code: int
    targets: tuple[tuple[str, str], ...]
    templates: str
    objects: tuple[int, int] | None = None
    excluded: tuple[tuple[str, str], ...] = ()   # pairs never drawn, target or distractor


SPLITS = {s.name: s for s in (
    SplitSpec('train', 0, SEEN_PAIRS, 'train', excluded=HELDOUT_PAIRS),
    SplitSpec('val', 1, SEEN_PAIRS, 'train', excluded=HELDOUT_PAIRS),
    SplitSpec('unseen_combo', 2, HELDOUT_PAIRS, 'train'),
    SplitSpec('paraphrase', 3, SEEN_PAIRS, 'heldout', excluded=HELDOUT_PAIRS),
    SplitSpec('reworded', 5, SEEN_PAIRS, 'reworded', excluded=HELDOUT_PAIRS),
    SplitSpec('clutter', 4, SEEN_PAIRS, 'train', (7, 10), excluded=HELDOUT_PAIRS),
)}
SPLIT_NAMES = tuple(SPLITS)


def get_split(name: str) -> SplitSpec:
    """The spec of split ``name`` (ValueError listing the valid names otherwise)."""
    try:
        return SPLITS[name]
    except KeyError:
        raise ValueError(f'unknown split {name!r}; expected one of {SPLIT_NAMES}') from None


def split_rng(name: str, seed: int) -> np.random.Generator:
    """The random stream of split ``name`` for ``seed`` (distinct for every split)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), get_split(name).code]))
