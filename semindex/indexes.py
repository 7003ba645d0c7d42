"""Stage 5, indexes: per-version HNSW and the scope-shaped lexical GIN, built safely.

Every build goes through `ensure_index`: a Postgres advisory lock keyed by the index name keeps two
runs from building the same index (the second waits, then finds it valid); an index left invalid by
an interrupted build is dropped and rebuilt; builds run with maintenance_work_mem raised for the
session and reset after, in parallel when the server's shared memory allows it
(semindex.build_parallelism); CONCURRENTLY is used once the data serves queries, so searches and
writes go on during the build.

Without pgvector (JSONB mode) there is no ANN index: build_hnsw reports it skipped (search is a
brute-force scan that ranks every scoped row), and the validity check has no HNSW to look for.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Callable

from psycopg import sql

from semindex import row_counts, settings
from semindex.build_parallelism import build_parallelism
from semindex.chunks import backfill_lexical_documents
from semindex.database import Database
from semindex.errors import InvalidInput
from semindex.sql_files import statement
from semindex.stage_report import StageReport
from semindex.vectors.storage import storage_for
from semindex.vectors.version import EmbeddingVersion, active_version, get_version

log = logging.getLogger(__name__)

LEXICAL_INDEX_NAME = "lexical_documents_scope_gin"
# The GIN over chunks that lexical search used before it ranked whole fields: dropped once.
RETIRED_LEXICAL_INDEX_NAME = "chunks_scope_document_gin"
JSONB_SKIPPED = "skipped (jsonb mode: brute-force search)"
# The ANN indexes semindex manages: a version's HNSW and its hot-source partial HNSW indexes.
_ANN_INDEX_NAME = re.compile(r"chunk_vectors_v\d+_(hnsw|hot_[0-9a-f]{16})")


@dataclass(frozen=True)
class HnswParameters:
    m: int = 16
    ef_construction: int = 64
    maintenance_work_mem: str = "256MB"

    def __post_init__(self) -> None:
        if not 2 <= self.m <= 100:
            raise InvalidInput(f"HNSW m={self.m} is outside pgvector's range 2..100")
        if not 4 <= self.ef_construction <= 1000 or self.ef_construction < 2 * self.m:
            raise InvalidInput(
                f"HNSW ef_construction={self.ef_construction} must be within 4..1000 and at least 2*m ({2 * self.m})"
            )
        object.__setattr__(self, "maintenance_work_mem", settings.memory_size(self.maintenance_work_mem, "maintenance_work_mem"))


@dataclass(frozen=True)
class IndexBuild:
    index_name: str
    action: str  # "exists", "built", "rebuilt", or JSONB_SKIPPED
    seconds: float
    concurrently: bool
    parallel_workers: int = 0

    @property
    def added(self) -> bool:
        return self.action in ("built", "rebuilt")


def is_ann_index_name(name: str) -> bool:
    """True for the name of a managed HNSW index (a version's own, or a hot source's partial one)."""
    return _ANN_INDEX_NAME.fullmatch(name) is not None


def index_validity(db: Database, names: list[str], schema: str = "semindex") -> dict[str, bool | None]:
    """{name: True (valid), False (invalid), None (missing)}."""
    with db.connection() as conn:
        found = dict(conn.execute(statement("indexes", "validity"), (schema, names)).fetchall())
    return {name: found.get(name) for name in names}


def concurrently_keyword(concurrently: bool) -> sql.SQL:
    return sql.SQL("CONCURRENTLY" if concurrently else "")


def ensure_index(
    db: Database,
    index_name: str,
    create: Callable[[bool], sql.Composable],
    *,
    concurrently: bool,
    maintenance_work_mem: str,
    schema: str = "semindex",
) -> IndexBuild:
    """Make `<schema>.<index_name>` exist and be valid; `create(concurrently)` gives the DDL."""
    started = time.monotonic()
    qualified = f"{schema}.{index_name}"
    with db.autocommit_connection() as conn:
        # A build whose client died is cancelled within a second instead of running on for nothing
        # (and holding the lock the next run waits for).
        conn.execute(statement("indexes", "session_settings"))
        if not conn.execute(statement("indexes", "try_lock"), (qualified,)).fetchone()[0]:
            log.info("waiting for another run that is building %s", qualified)
            conn.execute(statement("indexes", "lock"), (qualified,))
        try:
            state = dict(conn.execute(statement("indexes", "validity"), (schema, [index_name])).fetchall()).get(index_name)
            if state:
                return IndexBuild(index_name, "exists", time.monotonic() - started, concurrently)
            action = "built"
            if state is False:
                log.warning("index %s is invalid (an interrupted build); dropping and rebuilding it", qualified)
                conn.execute(statement("indexes", "drop", index=qualified, concurrently=concurrently_keyword(concurrently)))
                action = "rebuilt"
            parallel = build_parallelism(db, maintenance_work_mem)
            log.info("building %s with %s: %s", qualified,
                     f"{parallel.workers} parallel workers" if parallel.workers else "no parallel workers", parallel.reason)
            workers = str(parallel.workers)
            if concurrently:
                conn.execute(statement("indexes", "raise_build_memory"), (maintenance_work_mem, workers))
                try:
                    conn.execute(create(True))
                finally:
                    conn.execute(statement("indexes", "reset_build_memory"))
            else:
                # In a transaction: a build whose client dies is rolled back, never committed by a
                # backend that finished it after the client was gone.
                with conn.transaction():
                    conn.execute(statement("indexes", "raise_build_memory_local"), (maintenance_work_mem, workers))
                    conn.execute(create(False))
            return IndexBuild(index_name, action, time.monotonic() - started, concurrently, parallel.workers)
        finally:
            conn.execute(statement("indexes", "unlock"), (qualified,))


def serves_queries(db: Database, version: EmbeddingVersion | None = None) -> bool:
    """True once searches may be reading: the version is active (or, with no version, any is)."""
    if version is not None:
        current = active_version(db)
        return current is not None and current.version_id == version.version_id
    return active_version(db) is not None


def build_record_key_index(db: Database, table: str, *, concurrently: bool, maintenance_work_mem: str) -> IndexBuild:
    """The btree over `table`'s record keys (sql/indexes.sql: create_record_key_btree says why), built
    with the table's other search indexes, after loading: concurrently once searches read the table,
    so a table that predates it is not closed to writes for its build."""
    schema, name = table.split(".")
    index_name = f"{name}_record_key"

    def create(concurrently: bool) -> sql.Composable:
        return statement("indexes", "create_record_key_btree", concurrently=concurrently_keyword(concurrently),
                         index=index_name, table=table)

    build = ensure_index(db, index_name, create, concurrently=concurrently,
                         maintenance_work_mem=maintenance_work_mem, schema=schema)
    if build.added:
        log.info("%s.%s: %s in %.1fs", schema, index_name, build.action, build.seconds)
    return build


def build_hnsw(db: Database, version: EmbeddingVersion, parameters: HnswParameters) -> IndexBuild:
    """The version's search indexes: its record-key btree, then its HNSW graph (reported)."""
    serving = serves_queries(db, version)
    build_record_key_index(db, version.vectors_table, concurrently=serving,
                           maintenance_work_mem=parameters.maintenance_work_mem)
    if not storage_for(db).ann_indexes:
        log.info("%s: no HNSW index in JSONB mode (no pgvector); semantic search ranks %s by brute force",
                 version.hnsw_index_name, version.vectors_table)
        return IndexBuild(version.hnsw_index_name, JSONB_SKIPPED, 0.0, False)
    _retire_graph_over_rows(db, version, concurrently=serving)

    def create(concurrently: bool) -> sql.Composable:
        return statement(
            "indexes",
            "create_hnsw",
            concurrently=concurrently_keyword(concurrently),
            index=version.hnsw_index_name,
            vectors=version.vectors_table,
            opclass=version.metric.sql_opclass,
            m=parameters.m,
            ef_construction=parameters.ef_construction,
        )

    return ensure_index(
        db,
        version.hnsw_index_name,
        create,
        concurrently=serving,
        maintenance_work_mem=parameters.maintenance_work_mem,
    )


def _retire_graph_over_rows(db: Database, version: EmbeddingVersion, *, concurrently: bool) -> None:
    """Drop a version's HNSW index made before the graph held one element per distinct text (no
    `WHERE represents_text`), once the table has the column: ensure_index then builds its successor.
    Searches walk only the new graph, so until it is built they rank exactly (slower, never wrong)."""
    with db.connection() as conn:
        conn.execute(statement("vectors", "keep_text_representatives"), (version.vectors_table,))
    definition = index_definition(db, version.hnsw_index_name)
    if definition is not None and "represents_text" not in definition:
        log.warning("%s is a graph over every row, not one element per distinct text; rebuilding it", version.hnsw_index_name)
        drop_index(db, version.hnsw_index_name, concurrently=concurrently)


def build_lexical_index(db: Database, maintenance_work_mem: str = "256MB") -> IndexBuild:
    """The lexical documents' search indexes: their record-key btree, then the scope-shaped GIN (reported)."""
    serving = serves_queries(db)
    build_record_key_index(db, "semindex.lexical_documents", concurrently=serving, maintenance_work_mem=maintenance_work_mem)

    def create(concurrently: bool) -> sql.Composable:
        return statement("indexes", "create_lexical_gin", concurrently=concurrently_keyword(concurrently), index=LEXICAL_INDEX_NAME)

    return ensure_index(db, LEXICAL_INDEX_NAME, create, concurrently=serving, maintenance_work_mem=maintenance_work_mem)


def drop_index(db: Database, index_name: str, *, concurrently: bool = True) -> None:
    with db.autocommit_connection() as conn:
        conn.execute(statement("indexes", "drop", index=f"semindex.{index_name}", concurrently=concurrently_keyword(concurrently)))


def index_definition(db: Database, index_name: str) -> str | None:
    with db.connection() as conn:
        return conn.execute(statement("indexes", "definition"), (f"semindex.{index_name}",)).fetchone()[0]


def _build_report(build: IndexBuild, rows: int, **details) -> StageReport:
    return StageReport(
        row_count=rows,
        added=1 if build.added else 0,
        seconds=build.seconds,
        work_rows=rows if build.added else 0,
        details={"index": build.index_name, "action": build.action, "concurrently": build.concurrently,
                 "parallel_workers": build.parallel_workers, **details},
    )


def hnsw_stage(db: Database, version_key: str, parameters: HnswParameters, *, log_line=None) -> StageReport:
    version = get_version(db, version_key)
    build = build_hnsw(db, version, parameters)
    (log_line or log.info)(f"{build.index_name}: {build.action} in {build.seconds:.1f}s")
    return _build_report(build, row_counts.vector_rows(db, version))


def lexical_stage(db: Database, *, log_line=None, progress_emit=None) -> StageReport:
    backfilled = backfill_lexical_documents(db, progress_emit=progress_emit)
    if index_validity(db, [RETIRED_LEXICAL_INDEX_NAME])[RETIRED_LEXICAL_INDEX_NAME] is not None:
        drop_index(db, RETIRED_LEXICAL_INDEX_NAME)
    build = build_lexical_index(db)
    (log_line or log.info)(f"{build.index_name}: {build.action} in {build.seconds:.1f}s")
    return _build_report(build, lexical_document_count(db), records_backfilled=backfilled)


def lexical_document_count(db: Database) -> int:
    """Lexical documents, from the counts the writes keep (semindex.row_counts): no scan."""
    return row_counts.relation_rows(db, row_counts.LEXICAL_DOCUMENTS)
