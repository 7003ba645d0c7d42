"""The JSONB -> pgvector boot migration of an adopted semantic_search_blob table (seed 000).

The migration is a state machine read from the catalog alone (semindex.semantic_blob.table), so a run
killed at any statement finishes on the next one, and a run on a migrated table changes nothing:

  jsonb     the embedding column is JSONB, no staging column -> add `embedding_vec vector`
  staging   JSONB column + `embedding_vec` -> backfill the NULL rows in primary-key batches, then
            swap in ONE transaction (drop the JSONB column, rename embedding_vec, SET NOT NULL)
  swapped   the column is vector (NOT NULL); the HNSW index is missing or invalid -> build it
  migrated  all of the above, index valid -> nothing to do ("already migrated")

Rows whose embedding cannot be cast are moved, whole, to semindex.quarantined_semantic_blob_rows
with a reason (see sql/semantic_blob.sql), counted per reason in the log and in the report. The
cast itself decides: a batch is cast optimistically and only a batch whose cast fails is classified,
so valid rows never pay for the element-by-element checks.

Without pgvector (JSONB mode) the table is left as it is and nothing is deleted: uncastable rows are
counted (report.uncastable_rows) and skipped by the search.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import psycopg
from psycopg import sql

from semindex import settings
from semindex.database import Database
from semindex.indexes import HnswParameters, concurrently_keyword, ensure_index
from semindex.progress import ProgressReporter
from semindex.semantic_blob.table import (
    DEFAULT_TABLE,
    STAGING_COLUMN,
    BlobState,
    BlobTableError,
    blob_table_exists,
    check_index_dimensions,
    inspect,
    split_table_name,
)
from semindex.sql_files import statement
from semindex.stage_report import StageReport
from semindex.vectors.storage import storage_for

log = logging.getLogger(__name__)

REASONS = (
    "null_embedding",
    "not_an_array",
    "empty_array",
    "too_many_dimensions",
    "nan_or_infinity",
    "null_element",
    "non_numeric_element",
    "out_of_float4_range",
)


@dataclass
class MigrationReport:
    table: str
    mode: str  # "vector" (pgvector) or "jsonb" (no extension: the table stays JSONB)
    status: str  # "already migrated", "migrated" or "jsonb fallback"
    column: str
    phase_before: str  # the catalog state this run found (PHASES)
    steps: list[str] = field(default_factory=list)  # what this run did, in order
    rows: int = 0  # rows in the table when the run ended
    # vector mode: rows this run moved to quarantine, by reason; JSONB mode: rows the search skips
    uncastable_rows: dict[str, int] = field(default_factory=dict)
    backfilled_rows: int = 0
    batches: int = 0
    batch_size: int = settings.DEFAULT_MIGRATION_BATCH_SIZE
    dimensions: int = 384
    index_name: str | None = None
    index_action: str | None = None  # "exists", "built", "rebuilt"; None in JSONB mode
    maintenance_work_mem: str = settings.DEFAULT_MAINTENANCE_WORK_MEM
    vector_extension_version: str | None = None
    backfill_seconds: float = 0.0
    index_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def uncastable_total(self) -> int:
        return sum(self.uncastable_rows.values())

    def as_metadata(self) -> dict:
        """A flat dict of plain values (for Dagster metadata and --json output)."""
        data = asdict(self)
        data["steps"] = ", ".join(self.steps) or "none"
        data["uncastable_rows"] = json.dumps(self.uncastable_rows, sort_keys=True)
        data["uncastable_total"] = self.uncastable_total
        return data


def migrate(
    db: Database,
    *,
    table: str = DEFAULT_TABLE,
    batch_size: int | None = None,
    maintenance_work_mem: str | None = None,
    dimensions: int = 384,
    progress_emit: Callable[[str], None] | None = None,
    column: str | None = None,
    index_name: str | None = None,
    hnsw_m: int = 16,
    hnsw_ef_construction: int = 64,
    concurrently: bool = False,
) -> MigrationReport:
    """Bring `table` to pgvector storage (or, without the extension, audit it in JSONB mode).

    Safe to run at every boot and to kill at any point: see the module docstring. `concurrently`
    builds the index with CREATE INDEX CONCURRENTLY (for a table that is already serving reads).
    """
    started = time.monotonic()
    batch_size = settings.migration_batch_size(batch_size)
    maintenance_work_mem = settings.migration_maintenance_work_mem(maintenance_work_mem)
    dimensions = check_index_dimensions(dimensions)
    hnsw = HnswParameters(hnsw_m, hnsw_ef_construction, maintenance_work_mem)
    emit = progress_emit or log.info
    storage = storage_for(db)
    mode = storage.mode
    schema, name = split_table_name(table)
    qualified = f"{schema}.{name}"
    log.info("%s: storage mode %s%s", qualified, mode,
             f" (pgvector {db.vector_version})" if db.vector_version else " (no pgvector: brute-force search over JSONB)")

    with db.autocommit_connection() as conn:
        # If this process dies mid-statement, its backend notices within a second and rolls back,
        # instead of finishing a long index build and holding the table's lock for nothing.
        conn.execute(statement("semantic_blob", "session_settings"))
        if not conn.execute(statement("semantic_blob", "try_lock"), (qualified,)).fetchone()[0]:
            log.info("%s: another process is migrating it; waiting", qualified)
            conn.execute(statement("semantic_blob", "lock"), (qualified,))
        try:
            state = inspect(conn, qualified, dimensions, column, index_name)
            report = MigrationReport(
                table=qualified, mode=mode, status="migrated", column=state.column, phase_before=state.phase,
                batch_size=batch_size, dimensions=dimensions, index_name=state.index_name,
                maintenance_work_mem=maintenance_work_mem, vector_extension_version=db.vector_version,
            )
            log.info("%s: found state %s (column %s is %s)", qualified, state.phase, state.column, state.column_type)
            if not storage.ann_indexes:  # no pgvector: no vector type to migrate to
                _audit_jsonb(conn, state, report)
            elif state.phase == "migrated":
                report.status = "already migrated"
                report.index_action = "exists"
            else:
                _migrate_vector(db, conn, state, report, emit, hnsw, concurrently)
            report.rows = conn.execute(statement("semantic_blob", "row_count", table=qualified)).fetchone()[0]
        finally:
            # A broken connection has released the lock with its session already.
            with contextlib.suppress(psycopg.Error):
                conn.execute(statement("semantic_blob", "unlock"), (qualified,))
    report.seconds = round(time.monotonic() - started, 3)
    if report.uncastable_rows:
        what = "moved to quarantine" if storage.ann_indexes else "skipped by search (JSONB mode, left in place)"
        log.warning("%s: uncastable embeddings %s: %s", qualified, what,
                    ", ".join(f"{reason}={count}" for reason, count in sorted(report.uncastable_rows.items())))
    log.info("%s: %s in %.1fs (%s)", qualified, report.status, report.seconds, ", ".join(report.steps) or "no changes")
    return report


def _add_counts(target: dict[str, int], rows: Iterable[tuple[str, int]]) -> None:
    for reason, count in rows:
        target[reason] = target.get(reason, 0) + int(count)


def _ensure_support(conn) -> None:
    with conn.transaction():
        conn.execute(statement("semantic_blob", "create_support"))


def _audit_jsonb(conn, state: BlobState, report: MigrationReport) -> None:
    """JSONB mode: count what the search will skip; never delete (no cast is ever attempted)."""
    report.status = "jsonb fallback"
    if state.column_type != "jsonb":
        raise BlobTableError(f"{state.table}.{state.column} is {state.column_type} but pgvector is not installed")
    _ensure_support(conn)
    log.info("%s: phase audit (JSONB mode)", state.table)
    rows = conn.execute(statement("semantic_blob", "audit_uncastable", table=state.table, column=state.column)).fetchall()
    _add_counts(report.uncastable_rows, rows)
    report.steps.append("audited uncastable rows")


def _migrate_vector(db: Database, conn, state: BlobState, report: MigrationReport, emit, hnsw: HnswParameters,
                    concurrently: bool) -> None:
    table = state.table
    if state.column_type == "jsonb":
        _ensure_support(conn)
        if not state.staging:
            log.info("%s: phase add %s", table, STAGING_COLUMN)
            conn.execute(statement("semantic_blob", "add_staging_column", table=table, staging=STAGING_COLUMN))
            report.steps.append(f"added {STAGING_COLUMN}")
        _backfill(conn, state, report, emit)
        _swap(conn, state, report)
        conn.execute(statement("semantic_blob", "analyze", table=table))
        state = inspect(conn, table, report.dimensions, state.column, state.index_name)
    if not state.not_null:
        # Only a table found vector-typed but nullable (migrated by hand) gets here.
        _ensure_support(conn)
        with conn.transaction():
            removed = conn.execute(
                statement("semantic_blob", "quarantine_null_vectors", table=table, column=state.column),
                {"source_table": table},
            ).fetchone()[0]
            conn.execute(statement("semantic_blob", "set_not_null", table=table, column=state.column))
        if removed:
            _add_counts(report.uncastable_rows, [("null_embedding", removed)])
        report.steps.append("set NOT NULL")
    _build_index(db, state, report, hnsw, concurrently)


def _backfill(conn, state: BlobState, report: MigrationReport, emit) -> None:
    table, column = state.table, state.column
    started = time.monotonic()
    pending = conn.execute(statement("semantic_blob", "pending_count", table=table, staging=STAGING_COLUMN)).fetchone()[0]
    start = conn.execute(statement("semantic_blob", "first_pending_key", table=table, staging=STAGING_COLUMN)).fetchone()
    log.info("%s: phase backfill (%d rows to cast, batches of %d)", table, pending, report.batch_size)
    progress = ProgressReporter(f"{table} backfill", pending, emit)
    key, after = (tuple(start), sql.SQL(">=")) if start else (None, sql.SQL(">"))
    while key is not None:
        params = {
            "instance": key[0], "scope_key": key[1], "record_key": key[2],
            "batch_size": report.batch_size, "source_table": table,
        }
        parts = {"table": table, "column": column, "staging": STAGING_COLUMN, "after": after}
        with conn.transaction():
            conn.execute(statement("semantic_blob", "batch_settings"))
            while True:
                try:
                    with conn.transaction():  # a savepoint: a failed cast undoes only this attempt
                        selected, updated, nulls, *last = conn.execute(
                            statement("semantic_blob", "backfill_batch", **parts), params
                        ).fetchone()
                    break
                except (psycopg.DataError, psycopg.errors.ProgramLimitExceeded) as cast_error:
                    # 22xxx: not an array, bad element, out of range, empty; 54000: over 16,000 elements.
                    removed = conn.execute(statement("semantic_blob", "quarantine_batch", **parts), params).fetchall()
                    if not removed:
                        raise BlobTableError(
                            f"{table}: a batch from key {key} failed to cast ({cast_error}) but no row in it is "
                            "classified uncastable; semindex.semantic_blob_embedding_problem misses a case"
                        ) from cast_error
                    _add_counts(report.uncastable_rows, removed)
                    progress.advance(sum(count for _, count in removed))
        if nulls:
            _add_counts(report.uncastable_rows, [("null_embedding", nulls)])
        if selected == 0:
            break
        report.batches += 1
        report.backfilled_rows += updated
        progress.advance(updated + nulls)
        key, after = tuple(last), sql.SQL(">")
    progress.finish()
    report.backfill_seconds = round(time.monotonic() - started, 3)
    report.steps.append(f"backfilled {report.backfilled_rows} rows in {report.batches} batches")


def _swap(conn, state: BlobState, report: MigrationReport) -> None:
    table, column = state.table, state.column
    parts = {"table": table, "column": column, "staging": STAGING_COLUMN}
    log.info("%s: phase swap (%s jsonb -> vector, one transaction)", table, column)
    stragglers = 0
    with conn.transaction():
        conn.execute(statement("semantic_blob", "lock_table", table=table))
        try:
            # Optimistic: SET NOT NULL is the one full scan the swap needs when no row is missing.
            with conn.transaction():
                conn.execute(statement("semantic_blob", "swap_columns", **parts))
        except psycopg.errors.NotNullViolation:
            # Rows a writer added after the backfill passed their keys: cast them here, under the lock.
            removed = conn.execute(
                statement("semantic_blob", "quarantine_stragglers", **parts), {"source_table": table}
            ).fetchall()
            _add_counts(report.uncastable_rows, removed)
            stragglers = conn.execute(statement("semantic_blob", "backfill_stragglers", **parts)).rowcount
            conn.execute(statement("semantic_blob", "swap_columns", **parts))
    report.backfilled_rows += max(stragglers, 0)
    report.steps.append(f"swapped {STAGING_COLUMN} in as {column} (NOT NULL)")


def _build_index(db: Database, state: BlobState, report: MigrationReport, hnsw: HnswParameters, concurrently: bool) -> None:
    """The partial expression HNSW index, through the shared index builder (lock, validity, rebuild
    of an invalid one, serial build with raised memory)."""

    def create(concurrently: bool):
        return statement(
            "semantic_blob", "create_index", index=state.index_name, table=state.table, column=state.column,
            dimensions=report.dimensions, m=hnsw.m, ef_construction=hnsw.ef_construction,
            concurrently=concurrently_keyword(concurrently),
        )

    if not state.index_valid:
        log.info("%s: phase index build (%s, maintenance_work_mem %s, serial)", state.table, state.index_name,
                 report.maintenance_work_mem)
    build = ensure_index(db, state.index_name, create, concurrently=concurrently,
                         maintenance_work_mem=hnsw.maintenance_work_mem, schema=state.schema)
    report.index_action = build.action
    if build.added:
        report.index_seconds = round(build.seconds, 3)
        report.steps.append(f"{build.action} index {state.index_name}")


def adoption_stage(db: Database, table: str = DEFAULT_TABLE, *, progress_emit: Callable[[str], None] | None = None) -> StageReport:
    """Adopt the reference server's semantic table when the database holds one (idempotent: a
    migrated table is left untouched); nothing to do otherwise."""
    started = time.monotonic()
    if not blob_table_exists(db, table):
        return StageReport(row_count=0, seconds=time.monotonic() - started,
                           details={"table": table, "status": "no table to adopt"})
    report = migrate(db, table=table, progress_emit=progress_emit)
    return StageReport(
        row_count=report.rows,
        changed=report.backfilled_rows,
        removed=report.uncastable_total if report.mode == "vector" else 0,
        seconds=report.seconds,
        work_rows=report.backfilled_rows,
        details={"storage_mode": report.mode, **report.as_metadata()},
    )
