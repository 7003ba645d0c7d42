"""Adopting the reference server's semantic table in place: the JSONB -> pgvector boot migration of
`semantic_search_blob`, and its search (pgvector, or a brute force over JSONB without the extension).

The table: (connector_id, connector_instance_id, scope_key, record_key, <embedding>), primary key
(connector_instance_id, scope_key, record_key), scope_key the JSON text `["<stream>","<field>"]`.
The embedding column (found by type, whatever its name) starts as JSONB and becomes an untyped
`vector`, so rows of several dimensions share the table; a partial expression HNSW index serves one
dimension (`(embedding::vector(384)) vector_cosine_ops WHERE vector_dims(embedding) = 384`).

The migration is a state machine read from the catalog alone, so a run killed at any statement
finishes on the next one, and a run on a migrated table changes nothing:

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
counted (report.uncastable_rows) and skipped by the search, which streams the scope through a
server-side cursor into numpy and ranks everything before it keeps the top k.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import heapq
import json
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import psycopg
from psycopg import sql

from semindex.database import JSONB_MODE, Database
from semindex.progress import ProgressReporter
from semindex.sql_files import statement

log = logging.getLogger(__name__)

DEFAULT_TABLE = "public.semantic_search_blob"
DEFAULT_BATCH_SIZE = 50_000
MAX_BATCH_SIZE = 1_000_000
DEFAULT_MAINTENANCE_WORK_MEM = "256MB"
BATCH_SIZE_ENV = "SEMINDEX_MIGRATION_BATCH_SIZE"
MAINTENANCE_WORK_MEM_ENV = "SEMINDEX_MIGRATION_MAINTENANCE_WORK_MEM"
STAGING_COLUMN = "embedding_vec"
KEY_COLUMNS = ("connector_instance_id", "scope_key", "record_key")
MAX_VECTOR_DIMENSIONS = 16_000
MAX_HNSW_DIMENSIONS = 2_000  # pgvector's HNSW limit for the vector type
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
# What a migration run can find (inspect_blob_table().phase), in the order the steps run.
PHASES = ("jsonb", "staging", "swapped", "migrated")

# Search: the same defaults as semindex.search.PlannerSettings.
EXACT_THRESHOLD = 10_000
MIN_ANN_SHARE = 0.05
CANDIDATE_WINDOW = 200
MAX_EF_SEARCH = 1000
MAX_K = 1000
FALLBACK_FETCH_ROWS = 2000
# A JSONB text that is a flat array of JSON numbers and nothing else (no strings, null, true, [..]).
_NUMERIC_ARRAY_TEXT = re.compile(r"\[[0-9eE+\-., ]*\]")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


# ---- settings ------------------------------------------------------------------------------------
def resolve_batch_size(batch_size: int | None = None) -> int:
    """The backfill batch: the argument, else SEMINDEX_MIGRATION_BATCH_SIZE, else 50,000."""
    source = "batch_size"
    if batch_size is None:
        raw = os.environ.get(BATCH_SIZE_ENV, "").strip()
        if not raw:
            return DEFAULT_BATCH_SIZE
        source = BATCH_SIZE_ENV
        try:
            batch_size = int(raw.replace("_", ""))
        except ValueError:
            raise ValueError(f"{BATCH_SIZE_ENV}={raw!r} is not a whole number of rows") from None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"{source}={batch_size!r} must be a whole number of rows between 1 and {MAX_BATCH_SIZE:,}")
    return batch_size


_MEMORY = re.compile(r"^\s*(\d+)\s*(kB|MB|GB|TB)?\s*$")
_KB_PER_UNIT = {"kB": 1, "MB": 1024, "GB": 1024**2, "TB": 1024**3}


def resolve_maintenance_work_mem(value: str | None = None) -> str:
    """maintenance_work_mem for the index build: the argument, else the environment, else 256MB.

    PostgreSQL's own syntax (a number, optionally kB, MB, GB or TB; a bare number is kB), between
    1MB and PostgreSQL's maximum (2147483647kB).
    """
    source = "maintenance_work_mem"
    if value is None:
        value = os.environ.get(MAINTENANCE_WORK_MEM_ENV, "").strip() or DEFAULT_MAINTENANCE_WORK_MEM
        source = MAINTENANCE_WORK_MEM_ENV if os.environ.get(MAINTENANCE_WORK_MEM_ENV, "").strip() else source
    match = _MEMORY.match(str(value))
    if not match:
        raise ValueError(
            f"{source}={value!r} is not a memory size PostgreSQL understands (say 256MB or 2GB; units kB, MB, GB, TB)"
        )
    kilobytes = int(match.group(1)) * _KB_PER_UNIT[match.group(2) or "kB"]
    if not 1024 <= kilobytes <= 2_147_483_647:
        raise ValueError(f"{source}={value!r} must be between 1MB and 2147483647kB")
    return f"{match.group(1)}{match.group(2) or 'kB'}"


def split_table_name(table: str) -> tuple[str, str]:
    """("schema", "table") from "schema.table" or "table" (schema public)."""
    parts = table.split(".")
    if len(parts) == 1:
        parts = ["public", *parts]
    if len(parts) != 2 or not all(0 < len(part) <= 63 for part in parts):
        raise ValueError(f"table {table!r} must be 'schema.table' or 'table', each name 1 to 63 characters")
    return parts[0], parts[1]


def default_index_name(table_name: str, column: str, dimensions: int) -> str:
    name = f"{table_name}_{column}_{dimensions}_hnsw"
    if len(name) > 63:  # PostgreSQL would truncate it silently, and then never find it again
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[: 63 - 9]}_{digest}"
    return name


def _check_dimensions(dimensions: int) -> int:
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions <= MAX_HNSW_DIMENSIONS:
        raise ValueError(f"dimensions={dimensions!r} must be between 1 and {MAX_HNSW_DIMENSIONS} (pgvector's HNSW limit)")
    return dimensions


# ---- the catalog state ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BlobState:
    """What the catalog says about the table; every migration step is read from here."""

    schema: str
    name: str
    column: str  # the embedding column: JSONB before the swap, vector after
    column_type: str  # "jsonb" or "vector"
    staging: bool  # embedding_vec exists (backfill started, swap not done)
    not_null: bool
    index_name: str
    index_valid: bool | None  # None: no such index; False: left invalid by an interrupted build
    row_estimate: int

    @property
    def table(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def phase(self) -> str:
        if self.column_type == "jsonb":
            return "staging" if self.staging else "jsonb"
        if self.not_null and self.index_valid:
            return "migrated"
        return "swapped"


class BlobTableError(RuntimeError):
    """The table is not the reference server's semantic table, or is in a state no step explains."""


def inspect_blob_table(
    db: Database, *, table: str = DEFAULT_TABLE, dimensions: int = 384, column: str | None = None,
    index_name: str | None = None,
) -> BlobState:
    with db.connection() as conn:
        return _inspect(conn, table, dimensions, column, index_name)


def blob_table_exists(db: Database, table: str = DEFAULT_TABLE) -> bool:
    """Whether the database holds a table to adopt (the vector-column stage migrates it when it does)."""
    schema, name = split_table_name(table)
    with db.connection() as conn:
        return conn.execute(statement("semantic_blob", "relation"), (schema, name)).fetchone() is not None


def _inspect(conn, table: str, dimensions: int, column: str | None, index_name: str | None) -> BlobState:
    schema, name = split_table_name(table)
    relation = conn.execute(statement("semantic_blob", "relation"), (schema, name)).fetchone()
    if relation is None:
        raise BlobTableError(f"table {schema}.{name} does not exist")
    oid, row_estimate = relation
    columns = conn.execute(statement("semantic_blob", "columns"), (oid,)).fetchall()
    types = {col_name: type_name for col_name, type_name, _, _ in columns}
    formatted = {col_name: formatted_type for col_name, _, formatted_type, _ in columns}
    not_null = {col_name: flag for col_name, _, _, flag in columns}
    primary_key = conn.execute(statement("semantic_blob", "primary_key"), (oid,)).fetchone()[0]
    if tuple(primary_key or ()) != KEY_COLUMNS:
        raise BlobTableError(
            f"{schema}.{name} has primary key {tuple(primary_key or ())}, not {KEY_COLUMNS}: "
            "it is not the reference server's semantic table"
        )
    staging = STAGING_COLUMN in types
    if staging and types[STAGING_COLUMN] != "vector":
        raise BlobTableError(f"{schema}.{name}.{STAGING_COLUMN} is {formatted[STAGING_COLUMN]}, not vector")
    if staging and formatted[STAGING_COLUMN] != "vector":
        raise BlobTableError(
            f"{schema}.{name}.{STAGING_COLUMN} is {formatted[STAGING_COLUMN]}: it must be untyped vector so rows "
            "of several dimensions fit; drop that column and run again"
        )
    jsonb_columns = [c for c, t in types.items() if t == "jsonb"]
    vector_columns = [c for c, t in types.items() if t == "vector" and c != STAGING_COLUMN]
    if column is not None:
        if column not in types:
            raise BlobTableError(f"{schema}.{name} has no column {column!r} (it has {', '.join(types)})")
        if types[column] not in ("jsonb", "vector") or (staging and types[column] != "jsonb"):
            raise BlobTableError(f"{schema}.{name}.{column} is {formatted[column]}, not jsonb or vector")
        embedding = column
    elif staging:
        if len(jsonb_columns) != 1:
            raise BlobTableError(
                f"{schema}.{name} has {STAGING_COLUMN} but {len(jsonb_columns)} jsonb columns "
                f"({', '.join(jsonb_columns) or 'none'}); pass column= to say which is the embedding"
            )
        embedding = jsonb_columns[0]
    elif vector_columns:
        if len(vector_columns) > 1:
            raise BlobTableError(
                f"{schema}.{name} has several vector columns ({', '.join(vector_columns)}); pass column="
            )
        embedding = vector_columns[0]
    elif len(jsonb_columns) == 1:
        embedding = jsonb_columns[0]
    elif not jsonb_columns:
        raise BlobTableError(
            f"{schema}.{name} has no jsonb (or vector) embedding column; its columns are "
            + ", ".join(f"{c} {formatted[c]}" for c in types)
        )
    else:
        raise BlobTableError(
            f"{schema}.{name} has several jsonb columns ({', '.join(jsonb_columns)}): pass column= to say "
            "which holds the embedding"
        )
    index_name = index_name or default_index_name(name, embedding, dimensions)
    validity = conn.execute(statement("semantic_blob", "index_validity"), (schema, index_name)).fetchone()
    return BlobState(
        schema=schema,
        name=name,
        column=embedding,
        column_type=types[embedding],
        staging=staging,
        not_null=not_null[embedding],
        index_name=index_name,
        index_valid=None if validity is None else bool(validity[0]),
        row_estimate=int(row_estimate),
    )


# ---- the migration -------------------------------------------------------------------------------
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
    batch_size: int = DEFAULT_BATCH_SIZE
    dimensions: int = 384
    index_name: str | None = None
    index_action: str | None = None  # "exists", "built", "rebuilt"; None in JSONB mode
    maintenance_work_mem: str = DEFAULT_MAINTENANCE_WORK_MEM
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
    batch_size = resolve_batch_size(batch_size)
    maintenance_work_mem = resolve_maintenance_work_mem(maintenance_work_mem)
    dimensions = _check_dimensions(dimensions)
    if not 2 <= hnsw_m <= 100 or not 4 <= hnsw_ef_construction <= 1000 or hnsw_ef_construction < 2 * hnsw_m:
        raise ValueError(f"HNSW m={hnsw_m}, ef_construction={hnsw_ef_construction}: need 2<=m<=100 and 2m<=ef_construction<=1000")
    emit = progress_emit or log.info
    mode = db.probe_vector_mode()
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
            state = _inspect(conn, qualified, dimensions, column, index_name)
            report = MigrationReport(
                table=qualified, mode=mode, status="migrated", column=state.column, phase_before=state.phase,
                batch_size=batch_size, dimensions=dimensions, index_name=state.index_name,
                maintenance_work_mem=maintenance_work_mem, vector_extension_version=db.vector_version,
            )
            log.info("%s: found state %s (column %s is %s)", qualified, state.phase, state.column, state.column_type)
            if mode == JSONB_MODE:
                _audit_jsonb(conn, state, report)
            elif state.phase == "migrated":
                report.status = "already migrated"
                report.index_action = "exists"
            else:
                _migrate_vector(conn, state, report, emit, hnsw_m, hnsw_ef_construction, concurrently)
            report.rows = conn.execute(statement("semantic_blob", "row_count", table=qualified)).fetchone()[0]
        finally:
            # A broken connection has released the lock with its session already.
            with contextlib.suppress(psycopg.Error):
                conn.execute(statement("semantic_blob", "unlock"), (qualified,))
    report.seconds = round(time.monotonic() - started, 3)
    if report.uncastable_rows:
        what = "skipped by search (JSONB mode, left in place)" if mode == JSONB_MODE else "moved to quarantine"
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


def _migrate_vector(conn, state: BlobState, report: MigrationReport, emit, m: int, ef_construction: int,
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
        state = _inspect(conn, table, report.dimensions, state.column, state.index_name)
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
    _build_index(conn, state, report, m, ef_construction, concurrently)


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


def _build_index(conn, state: BlobState, report: MigrationReport, m: int, ef_construction: int,
                 concurrently: bool) -> None:
    started = time.monotonic()
    keyword = sql.SQL("CONCURRENTLY" if concurrently else "")
    qualified_index = f"{state.schema}.{state.index_name}"
    if state.index_valid:
        report.index_action = "exists"
        return
    action = "built"
    if state.index_valid is False:
        log.warning("%s: index %s is invalid (an interrupted build); dropping and rebuilding it", state.table, state.index_name)
        conn.execute(statement("semantic_blob", "drop_index", index=qualified_index, concurrently=keyword))
        action = "rebuilt"
    create = statement(
        "semantic_blob", "create_index", index=state.index_name, table=state.table, column=state.column,
        dimensions=report.dimensions, m=m, ef_construction=ef_construction, concurrently=keyword,
    )
    log.info("%s: phase index build (%s, maintenance_work_mem %s, serial)", state.table, state.index_name,
             report.maintenance_work_mem)
    if concurrently:
        conn.execute(statement("semantic_blob", "build_settings_session"), (report.maintenance_work_mem,))
        try:
            conn.execute(create)
        finally:
            conn.execute(statement("semantic_blob", "reset_build_settings"))
    else:
        with conn.transaction():
            conn.execute(statement("semantic_blob", "build_settings_local"), (report.maintenance_work_mem,))
            conn.execute(create)
    report.index_action = action
    report.index_seconds = round(time.monotonic() - started, 3)
    report.steps.append(f"{action} index {state.index_name}")


# ---- search --------------------------------------------------------------------------------------
def search_blob(
    db: Database,
    query_vector: Sequence[float] | np.ndarray,
    *,
    k: int,
    connector_instance_id: str,
    scope_keys: Sequence[str] | None = None,
    record_keys: Sequence[str] | None = None,
    table: str = DEFAULT_TABLE,
    column: str | None = None,
    index_name: str | None = None,
    exact_threshold: int = EXACT_THRESHOLD,
    min_ann_share: float = MIN_ANN_SHARE,
    candidate_window: int = CANDIDATE_WINDOW,
) -> list[tuple[str, str, float]]:
    """The k nearest rows by cosine distance: [(record_key, scope_key, distance)], nearest first.

    Only rows of the query's dimension, of one connector instance, of the given scope keys and
    record keys (None or empty: all) are candidates. Ties go by record key, then scope key; a zero
    vector's distance is NaN and reported as inf, last. Whenever k rows match, k come back.
    """
    query = np.asarray(query_vector, dtype=np.float64).ravel()
    if query.size == 0 or query.size > MAX_VECTOR_DIMENSIONS:
        raise ValueError(f"the query vector has {query.size} dimensions; pgvector allows 1 to {MAX_VECTOR_DIMENSIONS}")
    if not np.isfinite(query).all() or np.abs(query).max() > _FLOAT32_MAX:
        raise ValueError("the query vector has NaN, infinite or out-of-float4-range values")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ValueError(f"k={k!r} must be between 1 and {MAX_K}")
    params = {
        "instance": connector_instance_id,
        "scope_keys": list(scope_keys or ()),
        "record_keys": list(record_keys or ()),
        "k": k,
    }
    dimensions = int(query.size)
    with db.connection() as conn:
        state = _inspect(conn, table, dimensions, column, index_name)
        if state.column_type == "jsonb":
            hits = _search_jsonb(conn, state, query, params)
        else:
            params["query"] = "[" + ",".join(repr(float(x)) for x in query) + "]"
            hits = _search_vector(
                db, conn, state, dimensions, params, exact_threshold, min_ann_share, candidate_window
            )
    return hits


def _hit_order(hit: tuple[str, str, float]) -> tuple[float, str, str]:
    return (hit[2], hit[0], hit[1])


def _finite(distance: float | None) -> float:
    return math.inf if distance is None or math.isnan(distance) else float(distance)


def _search_vector(db: Database, conn, state: BlobState, dimensions: int, params: dict, exact_threshold: int,
                   min_ann_share: float, candidate_window: int) -> list[tuple[str, str, float]]:
    parts = {"table": state.table, "column": state.column, "dimensions": dimensions}
    k = params["k"]
    plan = "exact"
    if not params["record_keys"] and dimensions <= MAX_HNSW_DIMENSIONS and state.index_valid:
        # Count the scope, but only up to the size where a filtered graph walk starts to pay: a
        # small scope, or a small share of the table, is answered exactly (a filtered HNSW walk
        # under-returns and loses recall there).
        cap = max(exact_threshold, math.ceil(min_ann_share * state.row_estimate)) + 1
        scoped = conn.execute(statement("semantic_blob", "scope_count", table=state.table), {**params, "cap": cap}).fetchone()[0]
        if scoped >= cap:
            plan = "ann"
    if plan == "ann":
        if db.vector_mode is None:  # a Database opened without bootstrap: learn the pgvector version once
            db.probe_vector_mode()
        ef_search = min(MAX_EF_SEARCH, max(candidate_window, k))
        conn.execute(statement("semantic_blob", "ann_settings"), (str(ef_search), str(max(20_000, 100 * ef_search))))
        if db.hnsw_iterative_scan:
            conn.execute(statement("semantic_blob", "iterative_scan"))
        rows = conn.execute(statement("semantic_blob", "search_ann", **parts), params).fetchall()
        conn.commit()  # the settings were local to that transaction
        if len(rows) >= k:
            return sorted(((r, s, _finite(d)) for r, s, d in rows), key=_hit_order)
        log.debug("%s: ANN answer short (%d of %d); answering exactly", state.table, len(rows), k)
    rows = conn.execute(statement("semantic_blob", "search_exact", **parts), params).fetchall()
    return sorted(((r, s, _finite(d)) for r, s, d in rows), key=_hit_order)


def _search_jsonb(conn, state: BlobState, query: np.ndarray, params: dict) -> list[tuple[str, str, float]]:
    """Stream the scope in batches; keep a bounded heap of the best k over everything seen."""
    k = params["k"]
    dimensions = query.size
    query_norm = float(np.linalg.norm(query))
    # heap of (-distance, record_key, scope_key) with inverted string order: the worst hit on top.
    best: list[tuple[float, _Reversed, _Reversed]] = []
    cursor = conn.cursor(name="semindex_blob_scan")
    try:
        cursor.execute(
            statement("semantic_blob", "search_jsonb_rows", table=state.table, column=state.column),
            {**params, "dimensions": dimensions},
        )
        while rows := cursor.fetchmany(FALLBACK_FETCH_ROWS):
            keys, matrix = _numeric_rows(rows, dimensions)
            if not keys:
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                distances = 1.0 - (matrix @ query) / (np.linalg.norm(matrix, axis=1) * query_norm)
            distances = np.where(np.isnan(distances), np.inf, distances)
            # Only rows that can enter the top k are pushed (ties at the cut included).
            if len(distances) > k:
                cut = np.partition(distances, k - 1)[k - 1]
                if len(best) == k:
                    cut = min(cut, -best[0][0])
                candidates = np.nonzero(distances <= cut)[0]
            else:
                candidates = range(len(distances))
            for index in candidates:
                record_key, scope_key = keys[index]
                item = (-float(distances[index]), _Reversed(record_key), _Reversed(scope_key))
                if len(best) < k:
                    heapq.heappush(best, item)
                elif item > best[0]:
                    heapq.heapreplace(best, item)
    finally:
        cursor.close()
    hits = [(record.value, scope.value, -negative) for negative, record, scope in best]
    return sorted(hits, key=_hit_order)


@functools.total_ordering
class _Reversed:
    """A string that orders backwards, so the heap's top is the worst hit under the total order."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return self.value > other.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.value == other.value


def _numeric_rows(rows: list[tuple[str, str, str]], dimensions: int) -> tuple[list[tuple[str, str]], np.ndarray]:
    """The rows pgvector could hold, parsed: flat arrays of JSON numbers within float4 range.

    The same rows the migration would keep (semindex.semantic_blob_embedding_problem is NULL),
    checked on the text so valid rows are parsed once, in C.
    """
    kept = [row for row in rows if _NUMERIC_ARRAY_TEXT.fullmatch(row[2])]
    if not kept:
        return [], np.empty((0, dimensions))
    # parse_int=float: an integer too large for a double becomes inf instead of an OverflowError.
    matrix = np.array(json.loads("[" + ",".join(row[2] for row in kept) + "]", parse_int=float), dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow to inf is what we test for
        in_range = np.isfinite(matrix.astype(np.float32)).all(axis=1)
    if not in_range.all():
        kept = [row for row, ok in zip(kept, in_range, strict=True) if ok]
        matrix = matrix[in_range]
    return [(row[0], row[1]) for row in kept], matrix
