"""The query-vector cache: encoding the query is the expensive step of a semantic search, and one
page navigation asks for the same query several times.

An LRU of 128 entries with a 5-minute TTL, keyed by (encoder version, text), with single-flight:
concurrent requests for the same key wait for one computation instead of each encoding. The
search clears it when the active version changes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np


class QueryVectorCache:
    def __init__(self, max_entries: int = 128, ttl_seconds: float = 300.0, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, np.ndarray]] = OrderedDict()
        self._in_flight: dict[tuple[str, str], Future] = {}
        self._lock = threading.Lock()
        self._generation = None
        # Told of every lookup (True: answered from the cache), e.g. to count hits in a metric.
        self.on_lookup: Callable[[bool], None] | None = None

    def get(self, version_key: str, text: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        key = (version_key, text)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self._clock() - entry[0] < self.ttl_seconds:
                self._entries.move_to_end(key)
                hit = entry[1]
            else:
                hit = None
        if self.on_lookup is not None:
            self.on_lookup(hit is not None)
        if hit is not None:
            return hit
        with self._lock:
            waiting = self._in_flight.get(key)
            if waiting is None:
                waiting = Future()
                self._in_flight[key] = waiting
                leader = True
            else:
                leader = False
        if not leader:
            return waiting.result()
        try:
            vector = compute()
        except BaseException as error:
            with self._lock:
                del self._in_flight[key]
            waiting.set_exception(error)
            raise
        with self._lock:
            self._entries[key] = (self._clock(), vector)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            del self._in_flight[key]
        waiting.set_result(vector)
        return vector

    def clear_if_active_version_changed(self, active_version_key: str | None) -> None:
        with self._lock:
            if active_version_key != self._generation:
                self._entries.clear()
                self._generation = active_version_key

    def __len__(self) -> int:
        return len(self._entries)
