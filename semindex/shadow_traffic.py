"""Live shadow traffic (seed 002: mirror production queries to the candidate, return the serving
version's results).

While a version is built (state `ready`) but not serving, a sample of live semantic and hybrid
queries is run again on it after the answer was sent, and its top 10 records are compared with
what the serving version answered: top-10 overlap and rank-biased overlap, stored per query in
`semindex.shadow_observations` (with the query's hash, never its text). `live_traffic` sums them for
`semindex versions list` and the evaluation verdict, beside the judged-set figures.

The mirror never delays an answer: `offer` samples and puts the work on a bounded queue (dropped
when full) that one background thread drains. It reads with the service's own Searcher and writes
through a separate Database (the service itself runs as the read-only role). A service on a hot
standby reads there and must write through the primary: a writer that is itself read-only (a
standby) records nothing, said once as an error, rather than failing every mirrored query.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from psycopg.rows import class_row

from semindex import relevance_metrics
from semindex.database import Database, redact
from semindex.errors import InvalidInput, SemindexError
from semindex.search.request import SearchRequest
from semindex.sql_files import statement

log = logging.getLogger(__name__)

MIRRORED_MODES = ("semantic", "hybrid")
DEPTH = 10
CANDIDATES_TTL = 30.0  # seconds a candidate list is reused before it is read again


@dataclass(frozen=True)
class ShadowSettings:
    sample_rate: float = 0.1  # share of live semantic and hybrid queries mirrored
    queue_size: int = 256

    def __post_init__(self) -> None:
        if not 0 <= self.sample_rate <= 1:
            raise InvalidInput(f"shadow sample rate {self.sample_rate!r} must be between 0 and 1")
        if self.queue_size < 1:
            raise InvalidInput(f"shadow queue size {self.queue_size!r} must be at least 1")


@dataclass(frozen=True)
class Observation:
    version_key: str
    serving_key: str
    mode: str
    query_sha256: bytes
    overlap: float
    rbo: float


@dataclass(frozen=True)
class LiveTraffic:
    mode: str
    queries: int
    overlap_at_10: float
    rbo_at_10: float
    since: object
    until: object

    def as_dict(self) -> dict:
        return {"queries": self.queries, "overlap@10": round(self.overlap_at_10, 4), "rbo@10": round(self.rbo_at_10, 4),
                "since": self.since.isoformat(), "until": self.until.isoformat()}


def candidate_keys(db: Database) -> list[str]:
    with db.connection() as conn:
        return [row[0] for row in conn.execute(statement("shadow_traffic", "candidates"))]


def observe(search: Callable[[SearchRequest], Sequence], request: SearchRequest, served: Sequence[tuple],
            serving_key: str, candidate_key: str) -> Observation:
    """Run `request` on the candidate and compare its top records with `served` (the serving
    version's answer, as record identities, best first)."""
    hits = search(replace(request, version_key=candidate_key, k=DEPTH))
    ours = [hit.record for hit in hits][:DEPTH]
    theirs = list(served)[:DEPTH]
    return Observation(
        candidate_key, serving_key, request.mode, hashlib.sha256(request.query.encode("utf-8")).digest(),
        relevance_metrics.top_k_overlap(ours, theirs, DEPTH), relevance_metrics.rank_biased_overlap(ours, theirs, k=DEPTH),
    )


def record(db: Database, observations: Sequence[Observation]) -> int:
    if not observations:
        return 0
    with db.connection() as conn:
        return conn.execute(statement("shadow_traffic", "insert_observations"), {
            "versions": [o.version_key for o in observations], "serving": [o.serving_key for o in observations],
            "modes": [o.mode for o in observations], "hashes": [o.query_sha256 for o in observations],
            "overlaps": [o.overlap for o in observations], "rbos": [o.rbo for o in observations],
        }).rowcount


def live_traffic(db: Database, version_key: str) -> dict[str, dict]:
    """Per mode: the version's mirrored queries against the version serving now, and their mean
    top-10 overlap and RBO (empty when none were mirrored)."""
    with db.connection() as conn:
        rows = conn.cursor(row_factory=class_row(LiveTraffic)).execute(
            statement("shadow_traffic", "live_traffic"), {"version_key": version_key}).fetchall()
    return {row.mode: row.as_dict() for row in rows}


class ShadowMirror:
    """The bounded, sampled, never-blocking mirror; `offer` from the request path, one drain thread."""

    def __init__(self, search: Callable[[SearchRequest], Sequence], reader: Database, writer: Database,
                 settings: ShadowSettings = ShadowSettings(), *, on_event: Callable[[str], None] | None = None,
                 rng: random.Random | None = None) -> None:
        self._search = search
        self._reader = reader
        self._writer = writer
        self.settings = settings
        self._queue: queue.Queue = queue.Queue(maxsize=settings.queue_size)
        self._on_event = on_event or (lambda event: None)
        self._rng = rng or random.Random()
        self._candidates: tuple[float, list[str]] = (0.0, [])
        self._lock = threading.Lock()
        self._said_read_only = False
        self._thread = threading.Thread(target=self._drain, name="semindex-shadow", daemon=True)
        self._thread.start()

    def offer(self, request: SearchRequest, served: Sequence[tuple], serving_key: str | None) -> bool:
        """Queue `request` for the candidates when it is sampled; False when not (or dropped)."""
        if serving_key is None or request.mode not in MIRRORED_MODES or request.version_key is not None:
            return False
        if self._rng.random() >= self.settings.sample_rate:
            return False
        try:
            self._queue.put_nowait((request, tuple(served), serving_key))
        except queue.Full:
            self._on_event("dropped")
            return False
        self._on_event("queued")
        return True

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def join(self) -> None:
        """Wait until every queued query was mirrored (tests)."""
        self._queue.join()

    def _candidate_keys(self) -> list[str]:
        with self._lock:
            read_at, keys = self._candidates
            if time.monotonic() - read_at < CANDIDATES_TTL:
                return keys
        keys = candidate_keys(self._reader)
        with self._lock:
            self._candidates = (time.monotonic(), keys)
        return keys

    def _writer_refuses_writes(self) -> bool:
        """Whether the observations' database is read-only (SEMINDEX_SHADOW_DATABASE_URL pointing at a
        hot standby, like the service's own DATABASE_URL may): then nothing is mirrored, since no
        observation could be stored, and the error is logged once instead of once per query."""
        # Any writer with record()'s connection() will do (tests pass recorders); only a Database asks.
        ask = getattr(self._writer, "read_only_reason", None)
        reason = ask() if ask is not None else ""
        if reason and not self._said_read_only:
            self._said_read_only = True
            log.error("shadow traffic is not recorded: its database %s is %s, which refuses writes; point "
                      "SEMINDEX_SHADOW_DATABASE_URL at the primary", redact(self._writer.url), reason)
        return bool(reason)

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                request, served, serving_key = item
                if self._writer_refuses_writes():
                    self._on_event("read_only")
                    continue
                observations = [observe(self._search, request, served, serving_key, key)
                                for key in self._candidate_keys() if key != serving_key]
                record(self._writer, observations)
                self._on_event("recorded" if observations else "no_candidate")
            except (SemindexError, OSError, ValueError) as error:  # a mirror never takes the service down
                log.warning("shadow query failed: %s", " ".join(str(error).split()))
                self._on_event("failed")
            except Exception:
                log.exception("shadow query failed")
                self._on_event("failed")
            finally:
                self._queue.task_done()
