"""Stage 4, the vector column: each version's vectors live in a typed pgvector `vector(d)` column in
a table of their own, so each version has its own HNSW graph and a query touches only its own rows.

This stage makes sure the column exists with the version's declared type (a table created under
another declaration is refused, never silently reused), refreshes planner statistics after a load,
and reports the storage the version takes.
"""

from __future__ import annotations

from dataclasses import dataclass

from semindex.database import Database
from semindex.embeddings import EmbeddingVersion, ensure_vector_table, vector_count
from semindex.sql_files import statement


@dataclass(frozen=True)
class VectorColumnReport:
    table: str
    column_type: str
    rows: int
    total_bytes: int


def finalize_vector_column(db: Database, version: EmbeddingVersion) -> VectorColumnReport:
    ensure_vector_table(db, version)
    expected = f"vector({version.dimensions})"
    with db.connection() as conn:
        column_type = conn.execute(statement("vectors", "column_type"), (version.vectors_table,)).fetchone()[0]
        if column_type != expected:
            raise ValueError(
                f"{version.vectors_table}.embedding is {column_type}, but version {version.version_key!r} "
                f"declares {expected}"
            )
    with db.autocommit_connection() as conn:
        conn.execute(statement("vector_column", "analyze", vectors=version.vectors_table))
    with db.connection() as conn:
        total_bytes = conn.execute(statement("vectors", "table_bytes"), (version.vectors_table,)).fetchone()[0]
    return VectorColumnReport(version.vectors_table, column_type, vector_count(db, version), total_bytes)
