"""Stage 3, embeddings: the resumable, deduplicating backfill of one embedding version, by one worker
or several at once.

A worker leases a range of pending chunks (semindex.backfill_claims), encodes outside any transaction
the texts its range owns (texts with no vector yet in the version, first seen in that range: chunks
with the same content hash share one vector), COPYs the vectors in binary into a staging table, and in
one transaction inserts the vectors, marks the range done and moves the version's watermark over
every range done below the lowest one still at work. A killed worker therefore loses only its
in-flight range, which another worker (or the next run) takes over at once (its session's liveness
lock is gone with it; a stuck worker's range when its lease expires), and no row is written twice. Any number of workers may run this, in processes, Dagster steps or on machines
sharing the database; one worker is the same code. How the vectors are stored (pgvector or JSONB) is
the storage strategy's business (semindex.vectors.storage).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from semindex import backfill_claims as claims
from semindex import row_counts
from semindex.backfill_claims import Claim
from semindex.database import Database
from semindex.encoders import Encoder, EncoderSpec, load_encoder
from semindex.errors import Conflict, InvalidInput
from semindex.progress import ProgressReporter
from semindex.search.engines import change_capture_for
from semindex.sql_files import statement
from semindex.stage_report import StageReport
from semindex.vectors.storage import VectorStorage, storage_for
from semindex.vectors.version import EmbeddingVersion, get_version

log = logging.getLogger(__name__)

# Texts encoded between lease renewals: a renewal is one short UPDATE, a slice a fraction of a second.
ENCODE_SLICE = 256
# Longest wait between looks at ranges other workers hold, when there is nothing to carve.
MAX_POLL_SECONDS = 1.0


class DimensionMismatch(InvalidInput):
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
    """One worker's share of a backfill (the whole of it when it ran alone)."""

    version_key: str
    chunks: int = 0
    encoded_texts: int = 0
    reused_vectors: int = 0
    batches: int = 0
    taken_over: int = 0  # ranges this worker took over from a worker whose lease ran out
    lost: int = 0  # ranges this worker lost to a takeover (its lease ran out mid-batch)
    seconds: float = 0.0


@dataclass(frozen=True)
class _RangeWrite:
    chunks: int
    encoded: int
    chunks_done: int  # all workers, all runs


def backfill(
    db: Database,
    version: EmbeddingVersion,
    *,
    batch_size: int = 1024,
    encoder: Encoder | None = None,
    load: Callable[[EncoderSpec], Encoder] = load_encoder,
    progress_emit: Callable[[str], None] | None = None,
    worker: str | None = None,
    lease_seconds: float | None = None,
    torch_threads: int | None = None,
) -> BackfillReport:
    """Work on the version's backfill until no chunk is pending: claim a range, encode, write, repeat;
    when every remaining range is held by another live worker, wait for them (taking over any whose
    lease runs out). `encoder`, or the one `load` gives, is loaded only when there is something to
    encode; `torch_threads` caps torch's threads in this process (one per worker when N share cores)."""
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be at least 1, got {batch_size}")
    with db.connection() as conn:
        state = conn.execute(statement("vectors", "watermark"), (version.version_id,)).fetchone()
        if state is None:
            claims.forget(conn, version)  # ranges of a backfill whose row was forgotten
        watermark, encoded_before, reused_before = state if state else (0, 0, 0)
        pending = conn.execute(statement("vectors", "pending_count"), (watermark,)).fetchone()[0]
    report = BackfillReport(version.version_key)
    if state is not None and pending == 0:
        # Nothing to write, so no need to load (and probe) the model: a no-op re-run stays cheap.
        _finish_backfill(db, version)
        return report
    if version.state == "retired":
        raise Conflict(f"embedding version {version.version_key!r} is retired; nothing to backfill")
    encoder = encoder or load(version.encoder_spec)
    _limit_torch_threads(torch_threads)
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
    lease = lease_seconds if lease_seconds is not None else claims.lease_seconds()
    worker = worker or claims.worker_name()
    progress = ProgressReporter(f"embed {version.version_key}", pending, progress_emit, unit="chunks")
    done_before = encoded_before + reused_before
    with claims.liveness(db) as holder_lock:
        while True:
            claim = claims.claim_next(
                db, version, worker=worker, holder_lock=holder_lock, batch_size=batch_size, lease=lease
            )
            if claim is None:
                waiting = claims.outstanding(db, version)
                if waiting.claims == 0:
                    break
                # Other live workers hold the rest: wait for them (a dead one's range is free at the
                # next look; a stuck one's when its lease runs out).
                time.sleep(min(MAX_POLL_SECONDS, max(0.05, waiting.next_expiry_seconds)))
                continue
            if claim.attempts > 1:
                report.taken_over += 1
                log.info("worker %s took over chunks (%d, %d] of %s (attempt %d): its previous holder is gone or its lease ran out",
                         worker, claim.after_chunk, claim.through_chunk, version.version_key, claim.attempts)
            written = _backfill_range(db, version, claim, encoder, storage, lease)
            if written is None:
                report.lost += 1
                log.warning("worker %s lost chunks (%d, %d] of %s to a takeover (its lease of %gs ran out); "
                            "nothing was written", worker, claim.after_chunk, claim.through_chunk, version.version_key, lease)
                continue
            report.chunks += written.chunks
            report.encoded_texts += written.encoded
            report.reused_vectors += written.chunks - written.encoded
            report.batches += 1
            # The shared line: every worker's chunks against what was pending when this one started, so
            # the rate and ETA are the backfill's; this worker's own share is in the label.
            progress.what = (f"embed {version.version_key} worker {worker} ({report.chunks} chunks here, "
                             f"{report.chunks / max(progress.elapsed, 1e-9):.1f}/s); all workers")
            progress.advance(max(0, written.chunks_done - done_before - progress.done))
    progress.finish()
    _finish_backfill(db, version)
    report.seconds = progress.elapsed
    return report


def _backfill_range(
    db: Database, version: EmbeddingVersion, claim: Claim, encoder: Encoder, storage: VectorStorage, lease: float
) -> _RangeWrite | None:
    """Encode and write one claimed range; None when the lease was lost to a takeover first."""
    with db.connection() as conn:
        rows = conn.execute(statement("vectors", "claimed_chunks"), (claim.after_chunk, claim.through_chunk)).fetchall()
        owned = claims.owned_texts(conn, claim)
    to_encode: dict[bytes, str] = {}
    for _, sha, content in rows:
        if sha in owned and sha not in to_encode:
            to_encode[sha] = content
    # Encode outside any transaction: a batch can take seconds and must not hold a snapshot.
    vectors = _encode_renewing(db, claim, encoder, list(to_encode.values()), version.dimensions, lease)
    if vectors is None:
        return None
    params = {**claim.key, "through": claim.through_chunk}
    copy_staging = statement("vectors", "copy_staging")
    insert = statement("vectors", "insert_claimed", vectors=version.vectors_table)
    with db.connection() as conn:
        planned = claims.lock(conn, version)
        if planned is None or not claims.complete(conn, claim):
            return None
        storage.create_staging(conn)
        storage.copy_rows(conn, copy_staging, ["bytea"], zip(to_encode, vectors, strict=True))
        conn.execute(statement("vectors", "claim_targets"), {**params, "planned": planned})
        conn.execute(insert)
        orphans = dict(conn.execute(
            statement("vectors", "targets_without_vector", vectors=version.vectors_table), params
        ).fetchall())
        if orphans:  # rare: encode them now, inside the transaction, so the watermark never skips one
            storage.copy_rows(conn, copy_staging, ["bytea"],
                              zip(orphans, encoder.encode(list(orphans.values())), strict=True))
            conn.execute(insert)
        conn.execute(statement("vectors", "mark_sources_dirty"))
        encoded = len(to_encode) + len(orphans)
        advance = claims.release_and_advance(conn, claim, planned=planned, encoded=encoded, reused=len(rows) - encoded)
    return _RangeWrite(chunks=len(rows), encoded=encoded, chunks_done=advance.chunks_done)


def _encode_renewing(
    db: Database, claim: Claim, encoder: Encoder, texts: Sequence[str], dimensions: int, lease: float
) -> np.ndarray | None:
    """The texts' vectors, renewing the lease whenever a third of it has passed; None when it was
    taken over meanwhile (the work is another worker's now)."""
    if not texts:
        return np.zeros((0, dimensions), dtype=np.float32)
    parts = []
    renewed = time.monotonic()
    for start in range(0, len(texts), ENCODE_SLICE):
        if time.monotonic() - renewed > lease / 3:
            if not claims.renew(db, claim, lease):
                return None
            renewed = time.monotonic()
        parts.append(encoder.encode(texts[start:start + ENCODE_SLICE]))
    return np.concatenate(parts)


def _limit_torch_threads(threads: int | None) -> None:
    """Cap torch's intra-op threads, when torch is in use (a loaded sentence-transformers model):
    N workers on one machine each get their share of the cores instead of all of them."""
    torch = sys.modules.get("torch")
    if threads and torch is not None:
        torch.set_num_threads(threads)


def _finish_backfill(db: Database, version: EmbeddingVersion) -> None:
    # Ready only when nothing is pending (other workers may still be at work, or new chunks came);
    # and ready is not serving: a version serves only once promotion has re-read a passing verdict.
    with db.connection() as conn:
        conn.execute(statement("vectors", "set_ready_when_caught_up"), {"version_id": version.version_id})


def embeddings_stage(
    db: Database,
    version_key: str,
    *,
    batch_size: int = 1024,
    load: Callable[[EncoderSpec], Encoder] = load_encoder,
    progress_emit: Callable[[str], None] | None = None,
) -> StageReport:
    """The backfill of `version_key` by one worker, reported; `load` gives the encoder (once per process)."""
    version = get_version(db, version_key)
    report = backfill(db, version, batch_size=batch_size, load=load, progress_emit=progress_emit)
    return backfill_stage_report(db, version, [report])


def backfill_stage_report(db: Database, version: EmbeddingVersion, reports: Sequence[BackfillReport]) -> StageReport:
    """The stage's report from its workers' reports: their work summed, the longest worker's time."""
    chunks = sum(report.chunks for report in reports)
    return StageReport(
        row_count=vector_count(db, version),
        added=chunks,
        seconds=max((report.seconds for report in reports), default=0.0),
        work_rows=chunks,
        details={
            "encoded_texts": sum(report.encoded_texts for report in reports),
            "reused_vectors": sum(report.reused_vectors for report in reports),
            "workers": len(reports),
            "ranges_taken_over": sum(report.taken_over for report in reports),
            "ranges_lost": sum(report.lost for report in reports),
            "encoder": version.encoder_name,
            "encoder_revision": version.encoder_revision,
            "dimensions": version.dimensions,
        },
    )


def has_vector_table(db: Database, version: EmbeddingVersion) -> bool:
    with db.connection() as conn:
        return conn.execute(statement("vectors", "table_exists"), (version.vectors_table,)).fetchone()[0]


def vector_count(db: Database, version: EmbeddingVersion) -> int:
    """The version's vectors, from the counts its writes keep (semindex.row_counts): no table scan."""
    return row_counts.vector_rows(db, version)
