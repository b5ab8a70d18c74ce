"""The endless shuffled stream a recorded source draws its batches from: epochs over the usable
samples of a dataset, whole episodes held out on request, sharded so every rank takes its own
slice of each global batch, and a position that saves and restores exactly."""
from __future__ import annotations

import numpy as np

from .held_out import HeldOutEpisodes, choose_episodes, held_out_count


class SampleStream:
    """Mixin of a source with ``dataset.records`` and ``usable`` (dataset indices it may
    train on); call :meth:`_start_stream` once ``usable`` is set."""

    def _start_stream(self, seed: int) -> None:
        self._held_out, self.held_out_info = np.empty(0, np.int64), None
        self.rng = np.random.default_rng(seed)
        self.order, self.position = self._shuffled(), 0
        self.rank, self.world_size = 0, 1

    def __len__(self) -> int:
        """Usable samples (less held-out episodes)."""
        return len(self.usable)

    def hold_out_episodes(self, setting, seed: int, source: str,
                          val_path: str = '') -> HeldOutEpisodes | None:
        """Take the episodes ``data.val_episodes`` holds out (``held_out.py``) out of this
        source; None when it holds none. ``held_out`` then reads them."""
        episodes = np.array([str(r.get('episode', '')) for r in self.dataset.records],
                            dtype=object)
        order = list(dict.fromkeys(episodes[self.usable]))
        count = held_out_count(setting, len(order), source, val_path)
        if count == 0:
            return None
        chosen = choose_episodes(order, count, seed)
        held = np.isin(episodes[self.usable], list(chosen))
        self._held_out, self.usable = self.usable[held], self.usable[~held]
        self.rng = np.random.default_rng(seed)   # the order a source built without them has
        self.order, self.position = self._shuffled(), 0
        self.held_out_info = HeldOutEpisodes(setting, [e for e in order if e in chosen],
                                             len(self._held_out), len(order), len(self.usable))
        return self.held_out_info

    def shard(self, rank: int, world_size: int) -> None:
        """Read only this rank's part of each global batch (see :meth:`_mine`)."""
        if not 0 <= rank < world_size:
            raise ValueError(f'rank {rank} is not in a world of {world_size}')
        self.rank, self.world_size = rank, world_size

    def _shuffled(self) -> np.ndarray:
        return self.usable[self.rng.permutation(len(self.usable))]

    def _take(self, count: int) -> np.ndarray:
        """The next ``count`` entries of the endless shuffled stream (a new epoch's order
        when one runs out). Every rank holds the same order, position and RNG, so every rank
        takes the same entries."""
        taken = []
        while count:
            if self.position >= len(self.order):
                self.order, self.position = self._shuffled(), 0
            part = self.order[self.position:self.position + count]
            taken.append(part)
            self.position += len(part)
            count -= len(part)
        return np.concatenate(taken)

    def _mine(self, n: int) -> np.ndarray:
        """This rank's ``n`` entries of the next global batch of ``n * world_size``: rank r
        reads entries ``[r * n, (r + 1) * n)`` of it, so the ranks' shards are disjoint and
        together they are the batch one process would draw with ``n * world_size``."""
        return self._take(n * self.world_size)[self.rank * n:(self.rank + 1) * n]

    def state_dict(self) -> dict:
        return {'rng': self.rng.bit_generator.state, 'order': self.order.copy(),
                'position': self.position}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state['rng']
        self.order, self.position = np.asarray(state['order']), int(state['position'])
