"""The builder: the only code that opens a zvec collection read-write, and only a new, unpublished
directory (ann-substrate.md's design).

Under an advisory lock per version:
  1. In one REPEATABLE READ snapshot: the new horizon h_new = the snapshot's xmin (every older
     transaction has ended), and the rows to apply: every row for a full build, else every chunk
     touched since the published horizon h_prev as this snapshot sees it (gone: delete it).
  2. Copy the published generation g to `g<n+1>.tmp` (or create an empty collection), upsert and
     delete in batches of at most 1,024 (zvec's limit; replays upsert, and a delete of a missing id
     is success), optimize, flush, close, fsync, rename to `g<n+1>`.
  3. Verify: its document count is the table's in the snapshot, and sampled rows come back
     bit-identical to PostgreSQL's float4 values.
  4. Publish in one PostgreSQL transaction: generation n+1 with horizon h_new becomes the published
     one, g retired. That commit is the durable watermark; a lower horizon is refused. A kill
     before it leaves only an unpublished directory, deleted by the next build; nothing replays.
  5. Clean up: the change log below h_prev (readers still on g need their delta from h_prev),
     retired generations no process holds open, leftover `.tmp` directories.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from psycopg.rows import class_row

from semindex import settings
from semindex.ann_substrate.capture import ensure_change_capture
from semindex.ann_substrate.generations import (
    VECTOR_FIELD,
    disk_bytes,
    generation_path,
    published,
    require_zvec,
    unused,
    version_home,
)
from semindex.database import Database
from semindex.errors import Conflict, InvalidInput
from semindex.sql_files import statement
from semindex.vectors.storage import as_array
from semindex.vectors.version import EmbeddingVersion

log = logging.getLogger(__name__)

BATCH = 1024  # zvec's most documents a write
VERIFY_SAMPLE = 32
# zvec's graph metric per semindex metric. Cosine versions use inner product: zvec's COSINE stores
# vectors normalised (491 of 500 random vectors read back changed in the last bit), and a generation
# must hold PostgreSQL's float4 values exactly; a cosine version's vectors have unit norm (its
# quality check), for which inner product ranks as cosine does, and the final ranking is PostgreSQL's.
METRICS = {"cosine": "IP", "l2": "L2", "ip": "IP"}
PHASES = ("read_changes", "copied", "upsert_batch", "delete_batch", "optimize", "closed", "renamed", "published", "cleanup")


@dataclass(frozen=True)
class GraphParameters:
    m: int = 16
    ef_construction: int = 64


@dataclass(frozen=True)
class ChangedRow:
    chunk_id: int
    connector_instance_id: str | None
    stream: str | None
    field: str | None
    embedding: object  # numpy float32, None when the row is gone


class IntegerIds:
    """Sources and fields as the integers zvec filters on (never strings in a zvec filter),
    registered on a connection of their own so the builder's snapshot stays read-only."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.sources: dict[tuple[str, str], int] = {}
        self.fields: dict[str, int] = {}
        with db.connection() as conn:
            self.sources = {(i, s): n for i, s, n in conn.execute(statement("ann_substrate", "source_ids"))}
            self.fields = dict(conn.execute(statement("ann_substrate", "field_ids")).fetchall())

    def source(self, instance: str, stream: str) -> int:
        key = (instance, stream)
        if key not in self.sources:
            with self.db.connection() as conn:
                self.sources[key] = conn.execute(statement("ann_substrate", "register_source"),
                                                 {"instance": instance, "stream": stream}).fetchone()[0]
        return self.sources[key]

    def field(self, name: str) -> int:
        if name not in self.fields:
            with self.db.connection() as conn:
                self.fields[name] = conn.execute(statement("ann_substrate", "register_field"), {"field": name}).fetchone()[0]
        return self.fields[name]


@dataclass
class BuildReport:
    version_key: str
    generation: int
    horizon: str
    full: bool
    documents: int
    upserted: int
    deleted: int
    build_seconds: float
    disk_bytes: int
    cleaned: list[str] = field(default_factory=list)
    capture: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _fault(phase: str) -> None:
    """Tests kill the builder at a phase (SEMINDEX_ZVEC_FAULT) to prove every rerun recovers."""
    if settings.zvec_fault() == phase:
        os.kill(os.getpid(), signal.SIGKILL)


def schema(zvec, version: EmbeddingVersion, graph: GraphParameters):
    if version.distance_metric not in METRICS:
        raise InvalidInput(f"zvec has no {version.distance_metric!r} metric (it has {', '.join(METRICS)})")
    index = zvec.HnswIndexParam(metric_type=getattr(zvec.MetricType, METRICS[version.distance_metric]),
                                m=graph.m, ef_construction=graph.ef_construction)
    return zvec.CollectionSchema(
        name=f"v{version.version_id}",
        fields=[zvec.FieldSchema("source_id", zvec.DataType.INT64, index_param=zvec.InvertIndexParam()),
                zvec.FieldSchema("field_id", zvec.DataType.INT64, index_param=zvec.InvertIndexParam())],
        vectors=[zvec.VectorSchema(VECTOR_FIELD, zvec.DataType.VECTOR_FP32, dimension=version.dimensions, index_param=index)],
    )


def build(db: Database, version: EmbeddingVersion, *, full: bool = False, graph: GraphParameters = GraphParameters(),
          progress: Callable[[str], None] | None = None) -> BuildReport:
    """Build and publish the next generation (incremental from the published one unless `full`)."""
    zvec = require_zvec()
    db.require_vector("the zvec substrate (it re-ranks by pgvector's distance)")
    emit = progress or log.info
    capture = ensure_change_capture(db, version)
    if not capture.endswith("present"):
        full = True  # rows written before capture existed are in no change log
    started = time.monotonic()
    with db.autocommit_connection() as lock:
        lock.execute(statement("ann_substrate", "builder_lock"), {"version_id": version.version_id})
        report = _build_locked(db, zvec, version, full=full, graph=graph, emit=emit, started=started)
    report.capture = capture
    return report


def _build_locked(db: Database, zvec, version: EmbeddingVersion, *, full: bool, graph: GraphParameters,
                  emit: Callable[[str], None], started: float) -> BuildReport:
    current = published(db, version)
    full = full or current is None
    since = "0" if full else current.horizon
    with db.connection() as conn:
        number = conn.execute(statement("ann_substrate", "newest_generation"), {"version_id": version.version_id}).fetchone()[0] + 1
    home = version_home(version)
    _remove_leftovers(home, keep={current.generation} if current else set())
    target = generation_path(version, number)
    staging = target.with_name(target.name + ".tmp")
    upserted = deleted = expected = 0
    with db.connection() as conn:
        # One snapshot for the horizon, the rows and the count: the generation is this snapshot.
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        horizon = conn.execute(statement("ann_substrate", "snapshot_horizon")).fetchone()[0]
        params = {"version_id": version.version_id, "since": since}
        ids = IntegerIds(db)
        expected = conn.execute(statement("ann_substrate", "row_count", vectors=version.vectors_table)).fetchone()[0]
        emit(f"zvec v{version.version_id} g{number}: {'full build' if full else f'changes since {since}'}, horizon {horizon}")
        _fault("read_changes")
        if full:
            zvec_collection = zvec.create_and_open(str(staging), schema(zvec, version, graph))
        else:
            shutil.copytree(generation_path(version, current.generation), staging)
            _fault("copied")
            zvec_collection = zvec.open(str(staging), zvec.CollectionOption(read_only=False))
        try:
            name = "all_rows" if full else "changed_rows"
            with conn.cursor(name="zvec_rows", row_factory=class_row(ChangedRow)) as cursor:
                cursor.itersize = BATCH
                cursor.execute(statement("ann_substrate", name, vectors=version.vectors_table), params)
                while rows := cursor.fetchmany(BATCH):
                    present = [row for row in rows if row.embedding is not None]
                    gone = [str(row.chunk_id) for row in rows if row.embedding is None]
                    if present:
                        _check(zvec_collection.upsert([_doc(zvec, row, ids) for row in present]), "upsert")
                        upserted += len(present)
                        _fault("upsert_batch")
                    if gone:
                        _check(zvec_collection.delete(gone), "delete", missing_ok=True)
                        deleted += len(gone)
                        _fault("delete_batch")
            if settings.zvec_fault() == "optimize":
                threading.Timer(0.01, _fault, args=("optimize",)).start()
            zvec_collection.optimize()
            zvec_collection.flush()
        finally:
            zvec_collection.close()
        _fault("closed")
        _fsync_tree(staging)
        os.replace(staging, target)
        _fsync_directory(home)
        _fault("renamed")
        _verify(db, zvec, version, target, expected)
        seconds = round(time.monotonic() - started, 3)
        size = disk_bytes(target)
    _publish(db, version, number, horizon, expected, seconds, size)
    _fault("published")
    emit(f"zvec v{version.version_id}: published g{number} ({expected:,} documents, horizon {horizon}, {seconds} s)")
    cleaned = cleanup(db, version, keep_from=since if current else horizon)
    return BuildReport(version.version_key, number, horizon, full, expected, upserted, deleted, seconds, size, cleaned)


def _doc(zvec, row: ChangedRow, ids: IntegerIds):
    vector = as_array(row.embedding).astype(np.float32)
    return zvec.Doc(id=str(row.chunk_id), vectors={VECTOR_FIELD: vector},
                    fields={"source_id": ids.source(row.connector_instance_id, row.stream), "field_id": ids.field(row.field)})


def _check(statuses, what: str, *, missing_ok: bool = False) -> None:
    statuses = statuses if isinstance(statuses, list) else [statuses]
    failed = [status for status in statuses if not status.ok() and not (missing_ok and "not found" in str(status).lower())]
    if failed:
        raise Conflict(f"zvec {what} failed for {len(failed)} documents: {failed[0]}")


def _verify(db: Database, zvec, version: EmbeddingVersion, path, expected: int) -> None:
    """The renamed generation holds the snapshot's row count, and sampled rows bit-identical."""
    collection = zvec.open(str(path), zvec.CollectionOption(read_only=True))
    try:
        documents = collection.stats.doc_count
        if documents != expected:
            raise Conflict(f"zvec generation {path.name} holds {documents:,} documents, the table {expected:,}: not published")
        if not expected:
            return
        offset = max(0, expected // 2 - VERIFY_SAMPLE // 2)
        with db.connection() as conn:
            sample = conn.execute(statement("ann_substrate", "sample_rows", vectors=version.vectors_table),
                                  {"limit": VERIFY_SAMPLE, "offset": offset}).fetchall()
        stored = collection.fetch([str(chunk_id) for chunk_id, _ in sample])
        for chunk_id, embedding in sample:
            doc = stored.get(str(chunk_id))
            ours = as_array(embedding).astype(np.float32)
            if doc is None or not np.array_equal(np.asarray(doc.vector(VECTOR_FIELD), dtype=np.float32), ours):
                raise Conflict(f"zvec generation {path.name}: chunk {chunk_id} is missing or differs from PostgreSQL: not published")
    finally:
        collection.close()


def _publish(db: Database, version: EmbeddingVersion, number: int, horizon: str, documents: int, seconds: float, size: int) -> None:
    with db.connection() as conn:
        row = conn.execute(statement("ann_substrate", "lock_version"), {"version_id": version.version_id}).fetchone()
        if row is not None:
            newer = conn.execute("SELECT %s::xid8 < %s::xid8", (horizon, row[0])).fetchone()[0]
            if newer:
                raise Conflict(f"zvec v{version.version_id}: horizon {horizon} is below the published {row[0]}: not published")
        conn.execute(statement("ann_substrate", "retire_published"), {"version_id": version.version_id})
        conn.execute(statement("ann_substrate", "publish"), {
            "version_id": version.version_id, "generation": number, "horizon": horizon, "documents": documents,
            "build_seconds": seconds, "disk_bytes": size})


def cleanup(db: Database, version: EmbeddingVersion, *, keep_from: str | None = None) -> list[str]:
    """The change log below `keep_from`, retired generations nobody holds open, `.tmp` leftovers."""
    cleaned = []
    with db.connection() as conn:
        if keep_from is not None:
            pruned = conn.execute(statement("ann_substrate", "prune_changes"),
                                  {"version_id": version.version_id, "keep_from": keep_from}).rowcount
            cleaned.append(f"{pruned} change rows pruned")
        retired = [row[0] for row in conn.execute(statement("ann_substrate", "retired"), {"version_id": version.version_id})]
    _fault("cleanup")
    for number in retired:
        path = generation_path(version, number)
        if path.exists() and not unused(path):
            cleaned.append(f"g{number} kept: a reader holds it")
            continue
        shutil.rmtree(path, ignore_errors=True)
        with db.connection() as conn:
            conn.execute(statement("ann_substrate", "forget_generation"), {"version_id": version.version_id, "generation": number})
        cleaned.append(f"g{number} removed")
    current = published(db, version)
    cleaned += _remove_leftovers(version_home(version), keep={current.generation} if current else set(),
                                 also_retired_in_use=set(retired))
    return cleaned


def _remove_leftovers(home, *, keep: set[int], also_retired_in_use: set[int] = frozenset()) -> list[str]:
    """`.tmp` directories and generation directories no row names (an interrupted build's)."""
    removed = []
    for path in home.iterdir():
        if path.name.endswith(".tmp"):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(f"{path.name} removed")
        elif path.name.startswith("g") and path.name[1:].isdigit():
            number = int(path.name[1:])
            if number not in keep and number not in also_retired_in_use and unused(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(f"{path.name} removed (unpublished)")
    return removed


def retire_substrate(db: Database, version: EmbeddingVersion) -> None:
    """Every generation of a retired version, its directories and its change log."""
    with db.connection() as conn:
        conn.execute(statement("ann_substrate", "forget_generations"), {"version_id": version.version_id})
        conn.execute(statement("ann_substrate", "forget_changes"), {"version_id": version.version_id})
    shutil.rmtree(settings.zvec_home() / f"v{version.version_id}", ignore_errors=True)


def _fsync_tree(path) -> None:
    for entry in path.rglob("*"):
        if entry.is_file():
            descriptor = os.open(entry, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
    _fsync_directory(path)


def _fsync_directory(path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
