"""Bounded per-source fan-out for search.

Every per-source query of every concurrent search goes through one work queue with a fixed number
of workers (default 8, SEMINDEX_SEARCH_CONCURRENCY overrides): work starts as soon as a slot frees,
without sleeps or timers, and never more than the bound run against the store at once. Live tuning
of the reference server found 8 fastest and stable (16 had outliers, 2 under-used the store).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from semindex import settings

T = TypeVar("T")
R = TypeVar("R")


class SearchFanOut:
    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="semindex-search")
        self._lock = threading.Lock()
        self._in_flight = 0
        self.peak_in_flight = 0

    def _tracked(self, fn: Callable[[T], R], item: T) -> R:
        with self._lock:
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            return fn(item)
        finally:
            with self._lock:
                self._in_flight -= 1

    def submit(self, fn: Callable[[T], R], item: T) -> Future:
        return self._executor.submit(self._tracked, fn, item)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        return [future.result() for future in [self.submit(fn, item) for item in items]]


_default: SearchFanOut | None = None
_default_lock = threading.Lock()


def default_fanout() -> SearchFanOut:
    global _default
    with _default_lock:
        if _default is None:
            _default = SearchFanOut(settings.search_concurrency())
        return _default
