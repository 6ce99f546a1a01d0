"""A small thread-safe memo that keeps the most recently used `keep` values (models, thumbnails, map
JSON). `make` runs outside the lock, so a slow build never blocks readers of other keys; two threads
that miss the same key at once may both build it, and the later one's value is kept."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

V = TypeVar("V")


class Lru(Generic[V]):
    def __init__(self, keep: int):
        self.keep = keep
        self._lock = threading.Lock()
        self._values: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = make()
        with self._lock:
            self._values[key] = value
            while len(self._values) > self.keep:
                self._values.popitem(last=False)
        return value
