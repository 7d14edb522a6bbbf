"""Per-process cache of the store's slowly changing state, never older than ``ttl_s``.

Every query used to read the caller's token, the agreement's and datasets' states, the
newest dataset versions and the open objections in separate transactions: about half of
the gateway's own time on a small query. They change rarely, but a change must take
effect quickly: a suspension stops new queries **within one second on every worker**.

- An entry is served for at most ``ttl_s`` (0.5 s), so a change made by another process
  (another worker, ``dsb`` on the command line) is seen within that time.
- Any write of a state row through this process's store (anything but job rows) makes
  every entry stale at once, so a change made here holds on the very next request.
- Loaders return plain values; a loader that raises caches nothing.

    >>> cache = StateCache(ttl_s=60)
    >>> cache.get("k", lambda: 1), cache.get("k", lambda: 2)
    (1, 1)
    >>> cache.invalidate()
    >>> cache.get("k", lambda: 3)
    3
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")
TTL_S = 0.5


class StateCache:
    def __init__(self, ttl_s: float = TTL_S) -> None:
        self.ttl_s = ttl_s
        self.generation = 0
        self._entries: dict[Hashable, tuple[float, int, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now and entry[1] == self.generation:
            value: T = entry[2]
            return value
        generation = self.generation
        value = load()
        with self._lock:
            # A write that happened while loading makes what was loaded stale already.
            if generation == self.generation:
                self._entries[key] = (now + self.ttl_s, generation, value)
        return value

    def invalidate(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()
