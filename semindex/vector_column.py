"""Stage 4, the vector column: each version's vectors live in a typed pgvector `vector(d)` column in
a table of their own, so each version has its own HNSW graph and a query touches only its own rows.

This stage makes sure the column exists with the version's declared type (a table created under
another declaration is refused, never silently reused), refreshes planner statistics after a load,
and reports the storage the version takes.

Without pgvector (JSONB mode) the column is `jsonb`, a JSON array of d numbers checked on write; a
table left with another type (say vector(d) from before the extension went away) is refused too.
"""

from __future__ import annotations

from dataclasses import dataclass

from semindex.database import JSONB_MODE, Database
from semindex.embeddings import EmbeddingVersion, ensure_version_table, storage_mode, vector_count
from semindex.sql_files import statement


@dataclass(frozen=True)
class VectorColumnReport:
    table: str
    column_type: str
    rows: int
    total_bytes: int


def finalize_vector_column(db: Database, version: EmbeddingVersion) -> VectorColumnReport:
    ensure_version_table(db, version)
    jsonb = storage_mode(db) == JSONB_MODE
    expected = "jsonb" if jsonb else f"vector({version.dimensions})"
    with db.connection() as conn:
        column_type = conn.execute(statement("vectors", "column_type"), (version.vectors_table,)).fetchone()[0]
        if column_type != expected:
            if jsonb:
                raise ValueError(
                    f"{version.vectors_table}.embedding is {column_type}, but this database runs in JSONB mode "
                    f"(no pgvector), where version {version.version_key!r} stores its {version.dimensions}-dimensional "
                    "vectors as jsonb"
                )
            raise ValueError(
                f"{version.vectors_table}.embedding is {column_type}, but version {version.version_key!r} "
                f"declares {expected}"
            )
    with db.autocommit_connection() as conn:
        conn.execute(statement("vector_column", "analyze", vectors=version.vectors_table))
    with db.connection() as conn:
        total_bytes = conn.execute(statement("vectors", "table_bytes"), (version.vectors_table,)).fetchone()[0]
    return VectorColumnReport(version.vectors_table, column_type, vector_count(db, version), total_bytes)
