"""Validation on the user's own data: whole episodes of a recorded dataset held out of training.

``data.val_episodes`` says how many: ``auto`` (the default: a tenth of the episodes of a
``jsonl``/``lerobot`` dataset when no ``data.val_path`` is given, none otherwise), a fraction
below 1, a count of episodes, or 0 for none. Episodes, not samples: frames of one episode are
near copies of each other, so a sample held out beside its neighbours measures memory, not
generalisation. The choice is seeded (``seed``), the same on every rank and on ``--resume``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AUTO_FRACTION = 0.1


@dataclass
class HeldOutEpisodes:
    """Which episodes a run validates on, and how much data that is."""
    setting: object               # data.val_episodes as given
    episodes: list[str]           # the held-out episode ids, in dataset order
    samples: int                  # usable samples in them
    total_episodes: int
    train_samples: int

    def describe(self, path: str, seed: int) -> str:
        shown = ', '.join(self.episodes[:8]) + (' ...' if len(self.episodes) > 8 else '')
        return (f'data.val_episodes {self.setting}: validating on {len(self.episodes)} of '
                f'{self.total_episodes} episodes of {path} ({self.samples} samples, seed '
                f'{seed}; eval split held_out_episodes): {shown}; training on the other '
                f'{self.total_episodes - len(self.episodes)} ({self.train_samples} samples)')

    def to_dict(self) -> dict:
        return {'setting': self.setting, 'episodes': self.episodes, 'samples': self.samples,
                'total_episodes': self.total_episodes, 'train_samples': self.train_samples}


def held_out_count(setting, total: int, source: str, val_path: str) -> int:
    """How many of ``total`` episodes ``data.val_episodes`` holds out.

    Raises:
        ValueError: a setting that is not auto, 0, a fraction in (0, 1) or a whole count, or
            one that leaves no episode to train on (naming both numbers).
    """
    if setting == 'auto':
        if source not in ('jsonl', 'lerobot') or val_path or total < 2:
            return 0
        return max(1, round(AUTO_FRACTION * total))
    if isinstance(setting, bool) or not isinstance(setting, (int, float)) or setting < 0 \
            or (setting >= 1 and setting != int(setting)):
        raise ValueError(f'data.val_episodes must be auto, 0, a fraction below 1 (e.g. 0.1) '
                         f'or a whole number of episodes, got {setting!r}')
    if setting == 0:
        return 0
    count = max(1, round(setting * total)) if setting < 1 else int(setting)
    if count >= total:
        raise ValueError(f'data.val_episodes {setting} holds out {count} of the dataset\'s '
                         f'{total} episode(s), leaving none to train on: lower it (0 for '
                         'none)')
    return count


def choose_episodes(episodes: list[str], count: int, seed: int) -> set[str]:
    """``count`` of the distinct ``episodes``, drawn with ``seed``."""
    distinct = sorted(set(episodes))
    picked = np.random.default_rng(seed).permutation(len(distinct))[:count]
    return {distinct[i] for i in picked}
