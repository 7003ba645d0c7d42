"""Stage 6, retained-size projection: per (connector_instance_id, stream) the current record count,
chunk count, embedded count per version, bytes, a dirty flag and computed_at.

Search uses clean rows as cheap cardinality estimates, so every writer marks the sources it touches
dirty, and this stage refreshes exactly the dirty ones from the per-source counts the writes keep
(semindex.row_counts). Bytes: the record fields as JSON text, the chunk content and the vectors.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from psycopg.rows import class_row

from semindex import row_counts
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
    """Refresh the dirty sources; returns how many were refreshed. Each is read from the per-source
    counts the writes keep (semindex.row_counts), so the cost is the number of dirty sources and
    versions, never the rows a source holds."""
    # A version registered but never backfilled has no table yet, and nothing to count.
    versions = [v for v in all_versions(db) if v.state != "retired" and has_vector_table(db, v)]
    for version in versions:
        # Counted from now on (in full once, the first time), before the locks below are taken.
        row_counts.count_relation(db, version.vectors_table, "vectors", version.version_id)
    with db.connection() as conn:
        dirty = [(row[0], row[1]) for row in conn.execute(statement("retained_size", "lock_dirty")).fetchall()]
        if not dirty:
            return 0
        row_counts.fold(conn)
        # Rows and deltas written by a transaction that commits after this read belong to a source
        # it marks dirty: that mark waits on the row locks above, so the source is refreshed again.
        totals = {(t.relation, t.connector_instance_id, t.stream): t for t in row_counts.source_totals(
            conn, [row_counts.RAW_RECORDS, row_counts.CHUNKS, *(v.vectors_table for v in versions)], dirty)}

        def total(relation: str, source: tuple[str, str]) -> tuple[int, int]:
            found = totals.get((relation, *source))
            return (found.rows, found.bytes) if found else (0, 0)

        records, chunk_counts, sizes, embedded = [], [], [], []
        for source in dirty:
            record_rows, record_bytes = total(row_counts.RAW_RECORDS, source)
            chunk_rows, chunk_bytes = total(row_counts.CHUNKS, source)
            per_version = {v.version_key: total(v.vectors_table, source)[0] for v in versions}
            # Vector bytes: the vector(d) datum is 4 bytes a dimension plus an 8-byte header.
            vector_bytes = sum(per_version[v.version_key] * (4 * v.dimensions + 8) for v in versions)
            records.append(record_rows)
            chunk_counts.append(chunk_rows)
            sizes.append(record_bytes + chunk_bytes + vector_bytes)
            embedded.append(json.dumps({key: rows for key, rows in per_version.items() if rows}))
        conn.execute(statement("retained_size", "set_counts"), {
            "instances": [s[0] for s in dirty], "streams": [s[1] for s in dirty], "records": records,
            "chunks": chunk_counts, "bytes": sizes, "embedded": embedded})
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
