"""Leased ranges of a version's pending chunks, so several backfill workers share one backfill.

Workers (processes, Dagster steps, machines sharing the database) carve the chunks above a version's
watermark into ranges of chunk ids, one batch each, and lease them: a worker takes the lowest range
whose lease ran out (FOR UPDATE SKIP LOCKED, so two workers never take the same one and neither waits
for the other), else carves the next range. A worker that dies loses only the range it held, which
another worker takes over at once: each worker's session holds a PostgreSQL advisory lock while it
lives, and a dead process's connection, with its lock, is gone. A worker that is alive but stuck or
cut off from the database keeps its lock and loses its range when the lease runs out instead; a live
worker renews its lease while it encodes.

Each text without a vector belongs to the first range carved with it (semindex.embedding_text_claims),
so no text is encoded twice however the ranges interleave: a later range holding the same text leaves
those chunks to the owner, which writes their vectors with its own. Carving and completing a range
both lock the version's backfill row first, so each sees the other's commits.

  SEMINDEX_BACKFILL_LEASE_SECONDS  how long a backfill worker's claim on a range lasts without renewal
                                   before another worker may take it over (default 300, at least 1)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from psycopg.rows import class_row

from semindex.database import Database
from semindex.errors import Conflict, InvalidInput
from semindex.sql_files import statement
from semindex.vectors.version import EmbeddingVersion

LEASE_ENV = "SEMINDEX_BACKFILL_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 300.0
MIN_LEASE_SECONDS = 1.0
# The advisory lock namespace (first key) of backfill workers' liveness locks; the second key is the
# worker's own, random, stored with each range it holds.
LIVENESS_NAMESPACE = 0x5E31D


def lease_seconds() -> float:
    """SEMINDEX_BACKFILL_LEASE_SECONDS, or the default: long enough for a slow batch, short enough that
    a dead worker's range is picked up the same run."""
    raw = os.environ.get(LEASE_ENV, "").strip()
    if not raw:
        return DEFAULT_LEASE_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"{LEASE_ENV}={raw!r} is not a number of seconds") from None
    if not value >= MIN_LEASE_SECONDS:
        raise InvalidInput(f"{LEASE_ENV}={raw!r} is below the minimum of {MIN_LEASE_SECONDS:g} seconds")
    return value


def worker_name() -> str:
    """Who holds a claim, for people reading the claims table: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def torch_threads_for(workers: int, cores: int | None = None) -> int:
    """Torch threads per worker when N workers share this machine's cores: max(1, cores // N)."""
    if workers < 1:
        raise InvalidInput(f"workers must be at least 1, got {workers}")
    return max(1, (cores or os.cpu_count() or 1) // workers)


@dataclass(frozen=True)
class Claim:
    version_id: int
    after_chunk: int  # exclusive
    through_chunk: int  # inclusive
    token: uuid.UUID  # this lease; a takeover issues a new one, so the old holder can no longer write
    attempts: int  # 1 when carved; each takeover adds one

    @property
    def key(self) -> dict:
        return {"version_id": self.version_id, "after": self.after_chunk, "token": self.token}


@dataclass(frozen=True)
class Outstanding:
    claims: int  # ranges not done
    next_expiry_seconds: float  # until the first of their leases runs out (negative: already has)


@dataclass(frozen=True)
class Advance:
    watermark: int
    chunks_done: int  # every chunk the version's backfill has written, all workers and runs


@dataclass(frozen=True)
class _TakenOver:
    after_chunk: int
    through_chunk: int
    attempts: int


@dataclass(frozen=True)
class _NextRange:
    through_chunk: int | None
    chunk_count: int


@contextlib.contextmanager
def liveness(db: Database) -> Iterator[int]:
    """Hold this worker's liveness lock on a connection of its own for the block; yields its key."""
    with db.autocommit_connection() as conn:
        for _ in range(8):
            key = 1 + secrets.randbelow(2**31 - 2)
            held = conn.execute(statement("vectors", "hold_liveness"),
                                {"namespace": LIVENESS_NAMESPACE, "holder_lock": key}).fetchone()[0]
            if held:
                break
        else:
            raise Conflict("could not take a backfill liveness lock: 8 random keys were all held")
        yield key


def claim_next(
    db: Database, version: EmbeddingVersion, *, worker: str, holder_lock: int, batch_size: int, lease: float
) -> Claim | None:
    """The lowest range whose holder is gone or whose lease ran out, taken over; else a new range of
    up to `batch_size` chunks above everything carved; None when neither exists (other live workers
    may still hold ranges)."""
    token = uuid.uuid4()
    params = {"version_id": version.version_id, "worker": worker, "holder_lock": holder_lock, "token": token,
              "lease_seconds": lease, "namespace": LIVENESS_NAMESPACE}
    with db.connection() as conn:
        cursor = conn.cursor(row_factory=class_row(_TakenOver))
        taken = cursor.execute(statement("vectors", "take_over_expired"), params).fetchone()
    if taken is not None:
        return Claim(version.version_id, taken.after_chunk, taken.through_chunk, token, taken.attempts)
    with db.connection() as conn:
        planned = lock(conn, version)
        if planned is None:
            return None  # no backfill row: the version's table was never created
        cursor = conn.cursor(row_factory=class_row(_NextRange))
        nxt = cursor.execute(statement("vectors", "next_range"), (planned, batch_size)).fetchone()
        if not nxt.chunk_count:
            return None
        params.update(after=planned, through=nxt.through_chunk)
        conn.execute(statement("vectors", "insert_claim"), params)
        conn.execute(statement("vectors", "own_texts", vectors=version.vectors_table), params)
    return Claim(version.version_id, planned, nxt.through_chunk, token, 1)


def lock(conn: psycopg.Connection, version: EmbeddingVersion) -> int | None:
    """Lock the version's backfill row for this transaction and return the end of everything carved
    (None when the row does not exist). Read after the lock, so it sees every commit made under it."""
    row = conn.execute(statement("vectors", "lock_backfill"), (version.version_id,)).fetchone()
    if row is None:
        return None
    return conn.execute(
        statement("vectors", "planned_through"), {"watermark": row[0], "version_id": version.version_id}
    ).fetchone()[0]


def renew(db: Database, claim: Claim, lease: float) -> bool:
    """Extend the lease; False when it was taken over (this worker must drop the range)."""
    with db.connection() as conn:
        return conn.execute(statement("vectors", "renew_lease"), {**claim.key, "lease_seconds": lease}).rowcount == 1


def complete(conn: psycopg.Connection, claim: Claim) -> bool:
    """Mark the range done in the caller's transaction; False when this worker no longer holds it."""
    return conn.execute(statement("vectors", "complete_claim"), claim.key).rowcount == 1


def owned_texts(conn: psycopg.Connection, claim: Claim) -> set[bytes]:
    return {row[0] for row in conn.execute(statement("vectors", "owned_texts"), (claim.version_id, claim.after_chunk))}


def release_and_advance(
    conn: psycopg.Connection, claim: Claim, *, planned: int, encoded: int, reused: int
) -> Advance:
    """In the completing transaction: give up the range's texts (their vectors are written), move the
    watermark over every range done below the lowest one still at work, count the work, and drop the
    claims the watermark passed."""
    conn.execute(statement("vectors", "release_texts"), (claim.version_id, claim.after_chunk))
    cursor = conn.cursor(row_factory=class_row(Advance))
    advance = cursor.execute(
        statement("vectors", "advance_watermark"),
        {"version_id": claim.version_id, "planned": planned, "encoded": encoded, "reused": reused},
    ).fetchone()
    conn.execute(statement("vectors", "trim_claims"), (claim.version_id, advance.watermark))
    return advance


def outstanding(db: Database, version: EmbeddingVersion) -> Outstanding:
    with db.connection() as conn:
        cursor = conn.cursor(row_factory=class_row(Outstanding))
        return cursor.execute(statement("vectors", "outstanding_claims"), (version.version_id,)).fetchone()


def forget(conn: psycopg.Connection, version: EmbeddingVersion) -> None:
    """Drop a version's claims: its backfill row is gone (retired, or forgotten), so are its ranges."""
    conn.execute(statement("vectors", "forget_claims"), (version.version_id,))
