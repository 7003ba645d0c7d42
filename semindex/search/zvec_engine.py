"""The zvec engine: the "zvec" plan on the semantic engine seam (semindex.search.engine), over the
generations semindex.ann_substrate builds.

Each search process keeps one read-only handle per version on its published generation (learned
from PostgreSQL at most every HANDLE_TTL seconds; a new generation opens a new handle and the old
one closes once its in-flight queries finish, so clean-up can delete it). zvec proposes candidate
chunk ids, filtered on integer source and field ids only; one SQL statement then ranks the union of
those candidates and every row changed since the generation's horizon by PostgreSQL's exact
distance, with the scope applied again (sql/ann_substrate.sql, rerank). So a row PostgreSQL no
longer has never comes back, a fresh row is found at once, and the order is the planner's total
order (distance, record key, chunk id).

A short answer widens zvec's candidates, then the caller falls back to the pgvector plan and then
to an exact one (semindex.search.semantic.nearest_never_short). The engine steps aside, with the
reason in the plan's label, when no generation is published, when the published one has not passed
its recall check, when more than MAX_DELTA rows changed since it (a rebuild is due), or when the
published generation's files are not in this host's SEMINDEX_ZVEC_HOME.

On a hot standby the plan works as on the primary when the standby's search processes see the
builder's folder (same host or a shared SEMINDEX_ZVEC_HOME): which generation is published, its
horizon and the rows changed since it are all replicated rows, so the standby's delta covers exactly
what it has replayed. A replica on another host has no files (and a lagging one may name a
generation the builder has since pruned): the plan then steps aside to pgvector, logged once per
generation, instead of failing the search.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from psycopg.rows import class_row

from semindex.ann_substrate.generations import (
    VECTOR_FIELD,
    Generation,
    generation_path,
    pending_changes,
    published,
    require_zvec,
)
from semindex.database import Database
from semindex.search.engine import (
    Candidate,
    EngineSkipped,
    NearestRequest,
    PlanKind,
    SemanticEngine,
)
from semindex.sql_files import statement
from semindex.vectors.storage import VectorStorage, as_array
from semindex.vectors.version import EmbeddingVersion

log = logging.getLogger(__name__)

HANDLE_TTL = 2.0  # seconds a search process trusts its idea of the published generation
# Changed rows since the generation beyond which the delta costs more than zvec saves: measured on
# 20,000 rows (bench/zvec_vs_pgvector.py), the plan's p50 was 5.9 ms with 1,000 pending against the
# pgvector plan's 5.7, and 29 ms with 5,000.
MAX_DELTA = 1_000
IDS_TTL = 30.0


@dataclass
class _Handle:
    generation: Generation
    collection: object
    checked_at: float
    refs: int = 0
    retired: bool = False


@dataclass
class _Ids:
    read_at: float = 0.0
    sources: dict = field(default_factory=dict)
    fields: dict = field(default_factory=dict)


class ZvecHandles:
    """Read-only handles per version for this process (zvec: many read-only handles XOR one writer;
    the builder only ever writes a new directory, so readers never wait on it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: dict[int, _Handle] = {}

    def acquire(self, db: Database, version: EmbeddingVersion) -> _Handle | None:
        now = time.monotonic()
        with self._lock:
            handle = self._handles.get(version.version_id)
            if handle is not None and now - handle.checked_at < HANDLE_TTL:
                handle.refs += 1
                return handle
        current = published(db, version)
        with self._lock:
            handle = self._handles.get(version.version_id)
            if current is None:
                return None
            if handle is not None and handle.generation.generation == current.generation:
                handle.generation, handle.checked_at = current, now
                handle.refs += 1
                return handle
            zvec = require_zvec()
            collection = _open(zvec, version, current)
            fresh = _Handle(current, collection, now, refs=1)
            self._handles[version.version_id] = fresh
            if handle is not None:
                handle.retired = True
                self._close_if_idle(handle)
            return fresh

    def release(self, handle: _Handle) -> None:
        with self._lock:
            handle.refs -= 1
            self._close_if_idle(handle)

    def close_all(self) -> None:
        with self._lock:
            for handle in self._handles.values():
                handle.retired = True
                self._close_if_idle(handle)
            self._handles.clear()

    @staticmethod
    def _close_if_idle(handle: _Handle) -> None:
        if handle.retired and handle.refs <= 0:
            handle.collection.close()


_missing_logged: set[tuple[int, int]] = set()


def _open(zvec, version: EmbeddingVersion, generation: Generation):
    """A read-only handle on the generation's files, or EngineSkipped (logged once per generation)
    when this host has none: a replica on another host, or one lagging behind a prune."""
    path = generation_path(version, generation.generation)
    try:
        if not path.is_dir():
            raise FileNotFoundError(f"no folder {path}")
        return zvec.open(str(path), zvec.CollectionOption(read_only=True))
    except (OSError, ValueError, RuntimeError) as error:  # zvec says "path not exist" as ValueError
        reason = f"g{generation.generation}'s files are not readable on this host"
        key = (version.version_id, generation.generation)
        if key not in _missing_logged:
            _missing_logged.add(key)
            log.warning("%s: the zvec plan steps aside to pgvector: %s (%s); a search process on a replica needs "
                        "the builder's SEMINDEX_ZVEC_HOME", version.version_key, reason, " ".join(str(error).split()))
        raise EngineSkipped(reason) from error


HANDLES = ZvecHandles()


class ZvecEngine:
    name = "zvec"
    kinds = frozenset({PlanKind.ANN, PlanKind.GLOBAL, PlanKind.PARTIAL})
    captures_changes = True  # its version tables get change-capture triggers

    def __init__(self, fallback: SemanticEngine | None = None) -> None:
        self.fallback = fallback  # answers the plan when zvec steps aside or returns short
        self._ids = _Ids()
        self._ids_lock = threading.Lock()

    def serves(self, storage: VectorStorage) -> bool:
        return storage.ann_indexes  # the re-ranking is pgvector's exact distance

    def label(self, kind: PlanKind) -> str:
        return "zvec"

    def require(self) -> None:
        require_zvec()

    def nearest(self, db: Database, request: NearestRequest, *, require_recall: bool = True) -> list[Candidate]:
        version: EmbeddingVersion | None = getattr(request.target, "version", None)
        if version is None:
            raise EngineSkipped("not a version's table")
        handle = HANDLES.acquire(db, version)
        if handle is None:
            raise EngineSkipped("no published generation")
        try:
            generation = handle.generation
            if require_recall and not generation.recall_passed:
                raise EngineSkipped(f"g{generation.generation} has not passed its recall check")
            pending = pending_changes(db, version, generation.horizon, MAX_DELTA + 1)
            if pending > MAX_DELTA:
                raise EngineSkipped(f"over {MAX_DELTA:,} changes since g{generation.generation}: rebuild")
            zvec = require_zvec()
            where = self._filter(db, request)
            topk = max(request.limit, 10)
            while True:
                ids = self._candidates(zvec, handle.collection, request.query, topk, max(request.window, topk), where)
                rows = self._rerank(db, version, generation, request, ids)
                if len(rows) >= request.limit or topk >= request.max_window:
                    return rows
                topk = min(request.max_window, topk * 4)
        finally:
            HANDLES.release(handle)

    @staticmethod
    def _candidates(zvec, collection, query: np.ndarray, topk: int, ef: int, where: str | None) -> list[int]:
        vector = as_array(query).astype(np.float32)
        search = zvec.Query(VECTOR_FIELD, vector=vector, param=zvec.HnswQueryParam(ef=ef))
        internal = collection.query_internal_ids(search, topk=topk, filter=where)
        return [int(key) for key in collection.resolve_internal_ids(internal) if key is not None]

    def _rerank(self, db: Database, version: EmbeddingVersion, generation: Generation, request: NearestRequest,
                ids: list[int]) -> list[Candidate]:
        sources = request.plan.sources
        params = {
            **request.target._scoped(), "candidates": ids, "version_id": version.version_id, "horizon": generation.horizon,
            "instances": sorted({s.connector_instance_id for s in sources}), "streams": sorted({s.stream for s in sources}),
            "query": request.query, "limit": request.limit,
        }
        with db.connection() as conn:
            return conn.cursor(row_factory=class_row(Candidate)).execute(statement(
                "ann_substrate", "rerank", vectors=version.vectors_table, operator=version.metric.sql_operator), params).fetchall()

    def _filter(self, db: Database, request: NearestRequest) -> str | None:
        """A zvec filter of integers only: the plan's sources and the scope's fields."""
        sources, fields = self._integer_ids(db)
        known = all((s.connector_instance_id, s.stream) in sources for s in request.plan.sources)
        if not known:  # a source registered since the ids were read
            sources, fields = self._integer_ids(db, fresh=True)
        parts = []
        if request.plan.sources:
            wanted = sorted({sources.get((s.connector_instance_id, s.stream), -1) for s in request.plan.sources})
            parts.append(f"source_id IN ({', '.join(str(int(n)) for n in wanted)})")
        scope = getattr(request.target, "scope", None)
        if scope is not None and scope.fields:
            wanted = sorted({fields.get(name, -1) for name in scope.fields})
            parts.append(f"field_id IN ({', '.join(str(int(n)) for n in wanted)})")
        return " AND ".join(parts) or None

    def _integer_ids(self, db: Database, *, fresh: bool = False) -> tuple[dict, dict]:
        with self._ids_lock:
            if not fresh and time.monotonic() - self._ids.read_at < IDS_TTL:
                return self._ids.sources, self._ids.fields
        with db.connection() as conn:
            sources = {(i, s): n for i, s, n in conn.execute(statement("ann_substrate", "source_ids"))}
            fields = dict(conn.execute(statement("ann_substrate", "field_ids")).fetchall())
        with self._ids_lock:
            self._ids = _Ids(time.monotonic(), sources, fields)
        return sources, fields
