"""lru.LruCache: by count, by a byte budget, and the calls an owner with its own eviction rule uses."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz_widgets.lru import LruCache


def test_get_makes_once_and_keeps_the_most_recent():
    cache: LruCache[int] = LruCache(2)
    made = []

    def make(value: int):
        return lambda: made.append(value) or value

    assert [cache.get("a", make(1)), cache.get("b", make(2)), cache.get("a", make(9))] == [1, 2, 1]
    cache.get("c", make(3))  # "b" is the least recently used
    assert cache.keys() == ["a", "c"] and made == [1, 2, 3] and (cache.hits, cache.misses) == (1, 3)


def test_a_byte_budget_drops_the_oldest_but_never_the_newest():
    evicted = []
    cache: LruCache[np.ndarray] = LruCache(budget=100, weigh=lambda a: a.nbytes,
                                           on_evict=lambda key, _: evicted.append(key))
    cache.put("a", np.zeros(10, np.float32))  # 40 bytes
    cache.put("b", np.zeros(10, np.float32))
    cache.touch("a")
    cache.put("c", np.zeros(10, np.float32))  # 120 > 100: "b" goes
    assert cache.keys() == ["a", "c"] and evicted == ["b"] and cache.weight == 80
    cache.put("big", np.zeros(50, np.float32))  # alone over the budget: kept, everything else goes
    assert cache.keys() == ["big"] and evicted == ["b", "a", "c"]


def test_peek_and_pop_leave_the_order_and_items_are_oldest_first():
    cache: LruCache[int] = LruCache()
    for key in "abc":
        cache.put(key, ord(key))
    assert cache.peek("a") == 97 and cache.peek("z", -1) == -1
    assert [key for key, _ in cache.items()] == ["a", "b", "c"]
    assert cache.pop("b") == 98 and "b" not in cache and len(cache) == 2


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match="size must be >= 1"):
        LruCache(0)
    with pytest.raises(ValueError, match="budget and weigh go together"):
        LruCache(budget=10)
