"""A small least-recently-used mapping, for results that are cheap to keep and costly to make again.

It holds at most `size` entries and, given `weigh` (a value's size, e.g. its bytes), at most `budget` in all;
the least recently used go first, never the newest. `get(key, make)` is the usual way in; `peek`, `put`,
`touch`, `pop` and `items` (oldest first) serve a cache whose owner evicts by its own rule before `put`
(the activation extractor drops older inputs' unasked layers before whole inputs). The bookkeeping is locked:
a scan or a training thread may share a cache with the notebook's thread (`make` runs outside the lock).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class LruCache(Generic[V]):
    """At most `size` entries (None: no count limit) and at most `budget` by `weigh` (None: no budget).

    `on_evict(key, value)` is told of each entry the limits push out (not of `pop` or `clear`).
    """

    def __init__(self, size: int | None = None, *, budget: int | None = None, weigh: Callable[[V], int] | None = None,
                 on_evict: Callable[[Hashable, V], None] | None = None):
        if size is not None and size < 1:
            raise ValueError(f"size must be >= 1; got {size}")
        if (budget is None) != (weigh is None):
            raise ValueError("budget and weigh go together: a budget needs a way to weigh the values")
        self.size = size
        self.budget = budget
        self.weigh = weigh
        self.on_evict = on_evict
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.RLock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        """The kept value for `key` (now the most recent), or `make()`'s, kept and returned."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            self.misses += 1
        value = make()
        self.put(key, value)
        return value

    def peek(self, key: Hashable, default: V | None = None) -> V | None:
        """The kept value for `key`, or `default`; its place in the order does not change."""
        with self._lock:
            return self._entries.get(key, default)

    def put(self, key: Hashable, value: V) -> None:
        """Keep `value` as the most recent entry, then evict down to the limits (never this entry)."""
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            self._evict()

    def touch(self, key: Hashable) -> None:
        """Make `key` the most recent entry (nothing if it is not kept)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)

    def pop(self, key: Hashable, default: V | None = None) -> V | None:
        with self._lock:
            return self._entries.pop(key, default)

    def items(self) -> list[tuple[Hashable, V]]:
        """(key, value) pairs, least recently used first (a copy: the cache may change while it is read)."""
        with self._lock:
            return list(self._entries.items())

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._entries)

    @property
    def weight(self) -> int:
        """The values' total by `weigh` (0 without one), weighed now: a value may shrink in place."""
        if self.weigh is None:
            return 0
        with self._lock:
            return sum(self.weigh(value) for value in self._entries.values())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def _evict(self) -> None:
        while len(self._entries) > 1 and (
                (self.size is not None and len(self._entries) > self.size)
                or (self.budget is not None and self.weight > self.budget)):
            key, value = self._entries.popitem(last=False)
            if self.on_evict is not None:
                self.on_evict(key, value)
