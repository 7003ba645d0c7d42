"""Progress lines for long work: done/total, rate and ETA, at most one line every few seconds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class ProgressReporter:
    def __init__(
        self,
        what: str,
        total: int,
        emit: Callable[[str], None] | None = None,
        *,
        unit: str = "rows",
        every_seconds: float = 5.0,
    ) -> None:
        self.what = what
        self.unit = unit
        self.total = total
        self.done = 0
        self._emit = emit or logging.getLogger("semindex.progress").info
        self._every = every_seconds
        self._started = time.monotonic()
        self._last_emit = self._started

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    @property
    def rate(self) -> float:
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 else 0.0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._last_emit >= self._every:
            self._last_emit = now
            self._emit(self.line())

    def line(self) -> str:
        rate = self.rate
        remaining = max(self.total - self.done, 0)
        eta = f"{remaining / rate:.0f}s" if rate > 0 else "unknown"
        percent = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"{self.what}: {self.done}/{self.total} ({percent:.1f}%), "
            f"{rate:.1f} {self.unit}/s, ETA {eta}"
        )

    def finish(self) -> None:
        self._emit(f"{self.line()} - finished in {self.elapsed:.1f}s")
