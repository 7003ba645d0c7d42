"""Stage 6, retained-size projection: per (connector_instance_id, stream) the current record count,
chunk count, embedded count per version, bytes, a dirty flag and computed_at.

Search uses clean rows as cheap cardinality estimates, so every writer marks the sources it touches
dirty, and this stage recomputes exactly the dirty ones with set-based GROUP BYs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from psycopg.rows import class_row

from semindex.database import Database
from semindex.embeddings import has_vector_table
from semindex.sql_files import statement
from semindex.stage_report import Markdown, StageReport
from semindex.vectors.version import all_versions


@dataclass(frozen=True)
class SourceSize:
    connector_instance_id: str
    stream: str
    record_count: int
    chunk_count: int
    embedded_counts: dict[str, int]
    bytes: int
    dirty: bool
    computed_at: object


def refresh_projection(db: Database) -> int:
    """Recompute the dirty sources; returns how many were recomputed."""
    # A version registered but never backfilled has no table yet, and nothing to count.
    versions = [v for v in all_versions(db) if v.state != "retired" and has_vector_table(db, v)]
    with db.connection() as conn:
        dirty = conn.execute(statement("retained_size", "lock_dirty")).fetchall()
        if not dirty:
            return 0
        params = {"instances": [row[0] for row in dirty], "streams": [row[1] for row in dirty]}
        conn.execute(statement("retained_size", "recompute_counts"), params)
        for version in versions:
            conn.execute(
                statement("retained_size", "add_version_counts", vectors=version.vectors_table),
                {**params, "version_key": version.version_key, "dimensions": version.dimensions},
            )
        conn.execute(statement("retained_size", "mark_clean"), params)
    return len(dirty)


def projection(db: Database) -> list[SourceSize]:
    with db.connection() as conn:
        return conn.cursor(row_factory=class_row(SourceSize)).execute(statement("retained_size", "all")).fetchall()


def projection_stage(db: Database) -> StageReport:
    started = time.monotonic()
    recomputed = refresh_projection(db)
    sources = projection(db)
    table = "\n".join(
        ["| connector instance | stream | records | chunks | vectors | bytes |", "|---|---|---|---|---|---|"]
        + [
            f"| {s.connector_instance_id} | {s.stream} | {s.record_count} | {s.chunk_count} | "
            f"{', '.join(f'{k}: {v}' for k, v in s.embedded_counts.items())} | {s.bytes} |"
            for s in sources[:50]
        ]
    )
    return StageReport(row_count=len(sources), changed=recomputed, seconds=time.monotonic() - started,
                       work_rows=recomputed, details={"preview": Markdown(table)})
