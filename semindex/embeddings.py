"""Stage 3, embeddings: the resumable, deduplicating backfill of one embedding version.

The backfill walks chunks in id order in bounded batches; each batch encodes only texts that have no
vector yet in that version (chunks with the same content hash share one), COPYs the vectors in
binary into a staging table and inserts them, and advances the version's watermark in the same
transaction. A killed run therefore resumes at the first batch that did not commit, and never writes
a row twice. How the vectors are stored (pgvector or JSONB) is the storage strategy's business
(semindex.vectors.storage).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from semindex.database import Database
from semindex.encoders import Encoder, EncoderSpec, load_encoder
from semindex.errors import Conflict, InvalidInput
from semindex.progress import ProgressReporter
from semindex.search.engines import change_capture_for
from semindex.sql_files import statement
from semindex.stage_report import StageReport
from semindex.vectors.storage import storage_for
from semindex.vectors.version import EmbeddingVersion, get_version

log = logging.getLogger(__name__)


class DimensionMismatch(InvalidInput):
    pass


class ConcurrentBackfill(Conflict):
    pass


def check_encoder_dimensions(encoder: Encoder, version_key: str, encoder_name: str, dimensions: int) -> None:
    """Refuse an encoder whose real output does not match the version's declared dimension."""
    produced = encoder.encode(["dimension probe"]).shape[1]
    if produced != dimensions:
        raise DimensionMismatch(
            f"encoder {encoder_name!r} produces {produced}-dimensional vectors, but embedding "
            f"version {version_key!r} declares {dimensions} dimensions; nothing was written"
        )


@dataclass
class BackfillReport:
    version_key: str
    chunks: int = 0
    encoded_texts: int = 0
    reused_vectors: int = 0
    batches: int = 0
    seconds: float = 0.0


def backfill(
    db: Database,
    version: EmbeddingVersion,
    *,
    batch_size: int = 1024,
    encoder: Encoder | None = None,
    load: Callable[[EncoderSpec], Encoder] = load_encoder,
    progress_emit: Callable[[str], None] | None = None,
) -> BackfillReport:
    """Encode and store vectors for every chunk above the version's watermark, with `encoder` (or
    the one `load` gives, loaded only when there is something to encode)."""
    with db.connection() as conn:
        state = conn.execute(statement("vectors", "watermark"), (version.version_id,)).fetchone()
        watermark = state[0] if state else 0
        pending = conn.execute(statement("vectors", "pending_count"), (watermark,)).fetchone()[0]
    report = BackfillReport(version.version_key)
    if state is not None and pending == 0:
        # Nothing to write, so no need to load (and probe) the model: a no-op re-run stays cheap.
        _finish_backfill(db, version)
        return report
    if version.state == "retired":
        raise Conflict(f"embedding version {version.version_key!r} is retired; nothing to backfill")
    encoder = encoder or load(version.encoder_spec)
    if encoder.revision != version.encoder_revision:
        raise Conflict(
            f"encoder {version.encoder_name!r} is at revision {encoder.revision!r}, but embedding version "
            f"{version.version_key!r} was registered with {version.encoder_revision!r}; register a new version"
        )
    check_encoder_dimensions(encoder, version.version_key, version.encoder_name, version.dimensions)
    storage = storage_for(db)
    storage.create_table(db, version, change_capture_for(version))
    with db.connection() as conn:
        conn.execute(statement("embedding_versions", "set_state"), ("backfilling", version.version_id))
    progress = ProgressReporter(f"embed {version.version_key}", pending, progress_emit)
    copy_staging = statement("vectors", "copy_staging")
    insert_batch = statement("vectors", "insert_batch", vectors=version.vectors_table)
    while True:
        with db.connection() as conn:
            rows = conn.execute(statement("vectors", "pending_batch"), (watermark, batch_size)).fetchall()
            if not rows:
                break
            batch_shas = list({row[1] for row in rows})
            have = {
                row[0]
                for row in conn.execute(
                    statement("vectors", "texts_with_vectors", vectors=version.vectors_table), (batch_shas,)
                )
            }
        # Encode outside any transaction: a batch can take seconds and must not hold a snapshot.
        to_encode: dict[bytes, str] = {}
        for _, sha, content in rows:
            if sha not in have and sha not in to_encode:
                to_encode[sha] = content
        vectors = encoder.encode(list(to_encode.values())) if to_encode else np.zeros((0, version.dimensions))
        through = rows[-1][0]
        chunk_ids = [row[0] for row in rows]
        with db.connection() as conn:
            storage.create_staging(conn)
            storage.copy_rows(conn, copy_staging, ["bytea"], zip(to_encode, vectors, strict=True))
            conn.execute(insert_batch, {"chunk_ids": chunk_ids})
            orphans = dict(conn.execute(
                statement("vectors", "still_without_vector", vectors=version.vectors_table), (chunk_ids,)
            ).fetchall())
            if orphans:  # rare: encode them now, inside the batch, so the watermark never skips one
                storage.copy_rows(conn, copy_staging, ["bytea"], zip(orphans, encoder.encode(list(orphans.values())), strict=True))
                conn.execute(insert_batch, {"chunk_ids": chunk_ids})
                to_encode.update(orphans)
            advanced = conn.execute(
                statement("vectors", "advance_watermark"),
                {
                    "through": through,
                    "after": watermark,
                    "encoded": len(to_encode),
                    "reused": len(rows) - len(to_encode),
                    "version_id": version.version_id,
                },
            ).rowcount
            if advanced != 1:
                raise ConcurrentBackfill(
                    f"another run moved the watermark of {version.version_key!r} past {watermark}; "
                    "this batch was rolled back, nothing is lost"
                )
            conn.execute(statement("vectors", "mark_sources_dirty"), {"after": watermark, "through": through})
        watermark = through
        report.chunks += len(rows)
        report.encoded_texts += len(to_encode)
        report.reused_vectors += len(rows) - len(to_encode)
        report.batches += 1
        progress.advance(len(rows))
    progress.finish()
    _finish_backfill(db, version)
    report.seconds = progress.elapsed
    return report


def _finish_backfill(db: Database, version: EmbeddingVersion) -> None:
    # Ready is not serving: a version serves only once promotion has re-read a passing verdict.
    with db.connection() as conn:
        conn.execute(statement("embedding_versions", "set_state"), ("ready", version.version_id))


def embeddings_stage(
    db: Database,
    version_key: str,
    *,
    batch_size: int = 1024,
    load: Callable[[EncoderSpec], Encoder] = load_encoder,
    progress_emit: Callable[[str], None] | None = None,
) -> StageReport:
    """The backfill of `version_key`, reported; `load` gives the encoder (once per process)."""
    version = get_version(db, version_key)
    report = backfill(db, version, batch_size=batch_size, load=load, progress_emit=progress_emit)
    return StageReport(
        row_count=vector_count(db, version),
        added=report.chunks,
        seconds=report.seconds,
        work_rows=report.chunks,
        details={
            "encoded_texts": report.encoded_texts,
            "reused_vectors": report.reused_vectors,
            "encoder": version.encoder_name,
            "encoder_revision": version.encoder_revision,
            "dimensions": version.dimensions,
        },
    )


def has_vector_table(db: Database, version: EmbeddingVersion) -> bool:
    with db.connection() as conn:
        return conn.execute(statement("vectors", "table_exists"), (version.vectors_table,)).fetchone()[0]


def vector_count(db: Database, version: EmbeddingVersion) -> int:
    with db.connection() as conn:
        return conn.execute(statement("vectors", "count", vectors=version.vectors_table)).fetchone()[0]
