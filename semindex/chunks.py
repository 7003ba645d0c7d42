"""Stage 2, chunks: re-chunk exactly the records whose content changed since they were last chunked.

Pending records are found through a partial index (content hash differs from the hash the chunks
were cut from). Per batch, the new chunks are COPYed into a staging table and reconciled in one
transaction: chunks whose semantic key survives keep their id (and so their vectors), the rest of
the record's old chunks are deleted (their vectors go with them), new ones are inserted, and the
records are marked chunked. A killed run loses at most the batch in flight.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from semindex import row_counts
from semindex.chunking import ChunkingParameters, chunk_record_fields
from semindex.database import Database
from semindex.progress import ProgressReporter
from semindex.sql_files import statement
from semindex.stage_report import StageReport

log = logging.getLogger(__name__)


@dataclass
class ChunkingReport:
    records: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_kept: int = 0


def sync_chunks(
    db: Database,
    parameters: ChunkingParameters,
    *,
    batch_size: int = 2000,
    progress_emit: Callable[[str], None] | None = None,
) -> ChunkingReport:
    report = ChunkingReport()
    with db.connection() as conn:
        pending = conn.execute(statement("chunks", "pending_count")).fetchone()[0]
    progress = ProgressReporter("chunk records", pending, progress_emit)
    after_record_id = 0
    while True:
        with db.connection() as conn:
            rows = conn.execute(statement("chunks", "pending_batch"), (after_record_id, batch_size)).fetchall()
        if not rows:
            break
        after_record_id = rows[-1][0]
        # Cut the chunks outside any transaction: tokenising a batch takes a while and must not
        # hold a snapshot open.
        cut = {
            record_id: []
            if deleted
            else chunk_record_fields(instance, stream, record_key, fields, parameters)
            for record_id, _, _, instance, stream, record_key, fields, deleted in rows
        }
        by_id = {row[0]: row for row in rows}
        with db.connection() as conn:
            conn.execute(statement("chunks", "writer_lock"))
            unchanged = [
                row[0]
                for row in conn.execute(
                    statement("chunks", "lock_unchanged"), ([row[0] for row in rows], [row[1] for row in rows])
                )
            ]
            conn.execute(statement("chunks", "create_staging"))
            with conn.cursor().copy(statement("chunks", "copy_staging")) as copy:
                for record_id in unchanged:
                    _, _, connector_id, instance, stream, record_key, _, _ = by_id[record_id]
                    for chunk in cut[record_id]:
                        copy.write_row(
                            (record_id, connector_id, instance, stream, record_key, chunk.field,
                             chunk.chunk_no, chunk.content, chunk.content_sha256, chunk.semantic_key)
                        )
            removed = conn.execute(statement("chunks", "delete_stale"), (unchanged,)).rowcount
            added = conn.execute(statement("chunks", "insert_new")).rowcount
            staged = conn.execute(statement("chunks", "staged_count")).fetchone()[0]
            conn.execute(statement("chunks", "mark_records_chunked"), (unchanged,))
            rewrite_lexical_documents(conn, unchanged)
        # A record edited since it was read stays pending and is cut again on the next run.
        report.records += len(unchanged)
        report.chunks_removed += removed
        report.chunks_added += added
        report.chunks_kept += staged - added
        progress.advance(len(rows))
    progress.finish()
    return report


def rewrite_lexical_documents(conn, record_ids: list[int]) -> None:
    """The records' lexical documents (one per field, what lexical search ranks) and the term
    statistics, moved together in the caller's transaction, under the chunk writer lock."""
    if record_ids:
        conn.execute(statement("chunks", "remove_lexical_documents"), {"records": record_ids})
        conn.execute(statement("chunks", "add_lexical_documents"), {"records": record_ids})


def backfill_lexical_documents(db: Database, *, batch_size: int = 2000,
                               progress_emit: Callable[[str], None] | None = None) -> int:
    """Lexical documents for records chunked before they existed (a database from an earlier
    semindex), in record-id batches with a committed watermark: resumable, and done only once."""
    done_records = 0
    progress = None
    while True:
        with db.connection() as conn:
            conn.execute(statement("chunks", "writer_lock"))
            watermark, done = conn.execute(statement("chunks", "lexical_backfill_state")).fetchone()
            if done:
                break
            if progress is None:
                pending = conn.execute(statement("chunks", "pending_lexical_backfill"), (watermark,)).fetchone()[0]
                progress = ProgressReporter("lexical documents", pending, progress_emit, unit="records")
            records = [row[0] for row in conn.execute(statement("chunks", "lexical_backfill_batch"), (watermark, batch_size))]
            rewrite_lexical_documents(conn, records)
            conn.execute(statement("chunks", "lexical_backfill_advance"),
                         {"watermark": records[-1] if records else watermark, "done": len(records) < batch_size})
        done_records += len(records)
        progress.advance(len(records))
    if progress is not None:
        progress.finish()
    return done_records


def live_chunk_count(db: Database) -> int:
    """Chunks, from the counts the writes keep (semindex.row_counts): no scan."""
    return row_counts.relation_rows(db, row_counts.CHUNKS)


def chunks_stage(db: Database, parameters: ChunkingParameters, *, batch_size: int = 2000,
                 progress_emit: Callable[[str], None] | None = None) -> StageReport:
    started = time.monotonic()
    report = sync_chunks(db, parameters, batch_size=batch_size, progress_emit=progress_emit)
    return StageReport(
        row_count=live_chunk_count(db),
        added=report.chunks_added,
        removed=report.chunks_removed,
        seconds=time.monotonic() - started,
        work_rows=report.records,
        details={"records_rechunked": report.records, "chunks_kept": report.chunks_kept},
    )
