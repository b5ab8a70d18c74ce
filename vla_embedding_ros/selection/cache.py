"""A small bounded LRU cache that counts hits and misses (for instruction embeddings)."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable


class LRUCache:
    """Least-recently-used mapping with a fixed capacity and hit/miss counters.

    ``functools.lru_cache`` hides its entries and cannot be cleared per model; the selector
    needs to report hits/misses in diagnostics and to drop entries when the model changes.

    Args:
        capacity: the most entries kept; 0 disables caching (every lookup is a miss).
    """

    def __init__(self, capacity: int = 128):
        if int(capacity) < 0:
            raise ValueError(f'cache capacity must be >= 0, got {capacity}')
        self.capacity = int(capacity)
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def keys(self) -> list[Hashable]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._data)

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """Return the cached value for ``key``, computing and storing it on a miss."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
        # Compute outside the lock: a text forward pass must not block other lookups.
        value = compute()
        with self._lock:
            if self.capacity > 0:
                self._data[key] = value
                self._data.move_to_end(key)
                while len(self._data) > self.capacity:
                    self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        """Drop all entries (counters are kept)."""
        with self._lock:
            self._data.clear()

    def info(self) -> dict[str, int]:
        """Return ``{'hits', 'misses', 'size', 'capacity'}``."""
        with self._lock:
            return {'hits': self.hits, 'misses': self.misses, 'size': len(self._data),
                    'capacity': self.capacity}
