"""Stage 4, the vector column: each version's vectors live in a table of their own (its storage's
column type: pgvector's `vector(d)`, or `jsonb` without pgvector), so each version has its own HNSW
graph and a query touches only its own rows.

This stage makes sure the table exists with the version's declared type (a table created under
another declaration or another storage is refused, never silently reused), refreshes planner
statistics after a load, and reports the storage the version takes.
"""

from __future__ import annotations

import time

from semindex.database import Database
from semindex.row_counts import vector_rows
from semindex.search.engines import change_capture_for
from semindex.sql_files import statement
from semindex.stage_report import StageReport
from semindex.vectors.storage import storage_for
from semindex.vectors.version import get_version


def vector_column_stage(db: Database, version_key: str) -> StageReport:
    started = time.monotonic()
    version = get_version(db, version_key)
    storage = storage_for(db)
    storage.create_table(db, version, change_capture_for(version))
    column_type = storage.check_column(db, version)
    with db.autocommit_connection() as conn:
        conn.execute(statement("vector_column", "analyze", vectors=version.vectors_table))
    with db.connection() as conn:
        total_bytes = conn.execute(statement("vectors", "table_bytes"), (version.vectors_table,)).fetchone()[0]
    rows = vector_rows(db, version)
    return StageReport(
        row_count=rows,
        seconds=time.monotonic() - started,
        work_rows=rows,
        details={
            "storage_mode": storage.mode,
            "table": version.vectors_table,
            "column_type": column_type,
            "total_bytes": total_bytes,
        },
    )
