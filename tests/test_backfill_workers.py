"""Parallel backfill workers on a real PostgreSQL: worker processes SIGKILLed at random end in exactly
the state of one uninterrupted worker, every text encoded once as far as the database knows (and no
text twice by workers that were never killed); a range held by a killed worker is taken over at once
(its session's liveness lock went with it), and one held by a stopped worker (alive, connected, not
renewing) only once its lease has run out, and the stopped worker, woken, writes nothing of it."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semindex import chunks, embeddings, lifecycle, raw_records
from semindex.backfill_claims import LEASE_ENV
from semindex.chunking import ChunkingParameters
from semindex.database import Database
from semindex.vectors.version import EmbeddingVersion
from tests.conftest import sample_records, scratch_database, write_jsonl
from tests.stored_vectors import rows_and_vectors

LEASE_SECONDS = 2
KILLS = 4


def _records() -> list[dict]:
    """The sample's records with short repeated messages between them: the same text in many ranges,
    held by different workers at once."""
    repeated = [
        {"connector_id": "chat", "connector_instance_id": "c1", "stream": "messages", "record_key": f"m{i}",
         "fields": {"text": f"standup note {i % 30}: shipped, reviewed, blocked on nothing"},
         "updated_at": "2024-01-01T00:00:00Z"}
        for i in range(240)
    ]
    sample = sample_records(per_stream=6)
    mixed = []
    for i in range(max(len(repeated), len(sample))):
        mixed.extend(repeated[i:i + 1] + sample[i:i + 1])
    return mixed


def _load(db: Database, path: Path) -> EmbeddingVersion:
    raw_records.ingest_file(db, path)
    chunks.sync_chunks(db, ChunkingParameters())
    return lifecycle.register_version(db, "tiny", "hashing-32", 32)


@dataclass(frozen=True)
class FinalState:
    rows: dict[bytes, tuple]  # semantic_key -> (scope, field, content hash) of the vector row
    vectors: dict[bytes, np.ndarray]
    duplicate_chunk_ids: int
    watermark_at_max_chunk_id: bool
    encoded_texts: int
    reused_vectors: int
    distinct_texts: int
    chunk_count: int
    state: str
    claims_left: int


def _final_state(db: Database, version: EmbeddingVersion) -> FinalState:
    table = version.vectors_table  # built from the integer version id only
    with db.connection() as conn:
        rows, vectors = rows_and_vectors(conn, version)
        duplicates = conn.execute(f"SELECT count(*) - count(DISTINCT chunk_id) FROM {table}").fetchone()[0]
        watermark, encoded, reused = conn.execute(
            "SELECT watermark, encoded_texts, reused_vectors FROM semindex.embedding_backfill WHERE version_id = %s",
            (version.version_id,),
        ).fetchone()
        max_chunk_id, chunk_count, distinct = conn.execute(
            "SELECT max(chunk_id), count(*), count(DISTINCT content_sha256) FROM semindex.chunks"
        ).fetchone()
        state = conn.execute("SELECT state FROM semindex.embedding_versions WHERE version_id = %s",
                             (version.version_id,)).fetchone()[0]
        claims_left = conn.execute(
            "SELECT (SELECT count(*) FROM semindex.embedding_claims) + (SELECT count(*) FROM semindex.embedding_text_claims)"
        ).fetchone()[0]
    return FinalState(rows, vectors, duplicates, watermark == max_chunk_id, encoded, reused, distinct, chunk_count,
                      state, claims_left)


def _spawn(database_url: str, batch_size: int, *, sleep: float, encode_log: Path | None = None,
           lease: float = LEASE_SECONDS) -> subprocess.Popen:
    command = [sys.executable, "-m", "tests.backfill_worker", database_url, "tiny", str(batch_size),
               "--sleep", str(sleep), "--report"]
    if encode_log is not None:
        command += ["--encode-log", str(encode_log)]
    return subprocess.Popen(command, cwd=os.getcwd(), env={**os.environ, LEASE_ENV: str(lease)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _claims(db: Database) -> list[tuple]:
    with db.connection() as conn:
        return conn.execute(
            "SELECT after_chunk, worker, leased_until, attempts, clock_timestamp() FROM semindex.embedding_claims "
            "WHERE NOT done ORDER BY after_chunk"
        ).fetchall()


def test_three_workers_killed_at_random_end_in_the_single_worker_state(db, database_url, server_url, tmp_path):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", _records())
    batch_size = 8
    with scratch_database(server_url, "ref") as (_, reference_db):
        reference_version = _load(reference_db, corpus)
        reference_report = embeddings.backfill(reference_db, reference_version, batch_size=batch_size)
        expected = _final_state(reference_db, reference_version)
    assert reference_report.encoded_texts == expected.distinct_texts

    version = _load(db, corpus)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    encode_log = tmp_path / "encodes.log"
    workers = [_spawn(database_url, batch_size, sleep=0.08, encode_log=encode_log) for _ in range(3)]
    killed: set[int] = set()
    finished: list[subprocess.Popen] = []
    try:
        deadline = time.monotonic() + 60
        while not _claims(db) and time.monotonic() < deadline:
            time.sleep(0.02)
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 0.9))
            alive = [worker for worker in workers if worker.poll() is None]
            if not alive:
                break
            victim = rng.choice(alive)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(timeout=10)
            killed.add(victim.pid)
            workers[workers.index(victim)] = _spawn(database_url, batch_size, sleep=0.08, encode_log=encode_log)
        for worker in workers:
            worker.wait(timeout=max(1.0, deadline - time.monotonic()))
            finished.append(worker)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    outputs = [(worker.returncode, worker.stdout.read(), worker.stderr.read()) for worker in finished]
    assert all(code == 0 for code, _, _ in outputs), f"seed {seed}: a worker failed: {outputs}"
    reports = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in outputs]

    actual = _final_state(db, version)
    label = f"seed {seed}, killed {len(killed)}, reports {reports}"
    assert actual.rows == expected.rows, f"{label}: vector rows differ from the single worker's"
    worst = max(float(np.max(np.abs(actual.vectors[key] - expected.vectors[key]))) for key in expected.vectors)
    assert worst <= 1e-6, f"{label}: a vector differs by {worst}"
    assert actual.duplicate_chunk_ids == 0 and actual.chunk_count == len(actual.rows), label
    assert actual.watermark_at_max_chunk_id and actual.state == "ready" and actual.claims_left == 0, label
    # Each distinct text committed once: the counters equal the single worker's exactly.
    assert (actual.encoded_texts, actual.reused_vectors) == (expected.encoded_texts, expected.reused_vectors), label
    assert actual.encoded_texts == actual.distinct_texts, label

    # Every encode call, killed workers' included: no text twice among workers never killed, and the
    # killed ones cost at most their in-flight range each.
    with db.connection() as conn:
        texts = {hashlib.sha256(content.encode()).hexdigest()
                 for (content,) in conn.execute("SELECT DISTINCT content FROM semindex.chunks")}
    encodes = [line.split() for line in encode_log.read_text().splitlines()]
    assert {sha for _, sha in encodes} == texts, label
    by_survivors = Counter(sha for pid, sha in encodes if int(pid) not in killed)
    assert max(by_survivors.values()) == 1, f"{label}: a text was encoded twice by live workers"
    assert len(encodes) - len(texts) <= len(killed) * batch_size, f"{label}: kills cost more than their ranges"
    print(f"\nseed {seed}: {len(killed)} workers killed, {len(encodes)} encodes for {len(texts)} texts, "
          f"{sum(r['taken_over'] for r in reports)} ranges taken over by the last workers")


def _wait_for_claim(db: Database, worker: subprocess.Popen, deadline: float) -> tuple:
    held = []
    while not held and time.monotonic() < deadline:
        held = [claim for claim in _claims(db) if claim[1].endswith(f":{worker.pid}")]
        time.sleep(0.02)
    assert held, "the worker never claimed a range"
    return held[0]


def _wait_for_takeover(db: Database, after_chunk: int, taker: subprocess.Popen, deadline: float):
    """The database's clock when `taker` is first seen holding the range (attempt 2)."""
    while taker.poll() is None and time.monotonic() < deadline:
        for claim_after, worker, _, attempts, now in _claims(db):
            if claim_after == after_chunk and worker.endswith(f":{taker.pid}"):
                assert attempts == 2
                return now
        time.sleep(0.05)
    raise AssertionError("the range was never taken over")


def _assert_complete(db: Database, version: EmbeddingVersion) -> None:
    state = _final_state(db, version)
    assert state.chunk_count == len(state.rows) and state.duplicate_chunk_ids == 0
    assert state.watermark_at_max_chunk_id and state.state == "ready" and state.claims_left == 0
    assert state.encoded_texts == state.distinct_texts


def _report(process: subprocess.Popen) -> dict:
    return json.loads(process.stdout.read().strip().splitlines()[-1])


def test_a_killed_workers_range_is_taken_over_at_once(db, database_url, tmp_path):
    version = _load(db, write_jsonl(tmp_path / "corpus.jsonl", sample_records(per_stream=3)))
    lease = 60.0  # far longer than the test: only the liveness lock can free the range
    killed = _spawn(database_url, 16, sleep=60, lease=lease)
    taker = None
    try:
        deadline = time.monotonic() + 60
        after_chunk, _, leased_until, attempts, _ = _wait_for_claim(db, killed, deadline)
        assert attempts == 1
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=10)
        taker = _spawn(database_url, 16, sleep=0.3, lease=lease)
        taken_at = _wait_for_takeover(db, after_chunk, taker, deadline)
        assert taken_at < leased_until, "the killed worker's range waited for its lease"
        assert taker.wait(timeout=max(1.0, deadline - time.monotonic())) == 0, taker.stderr.read()
    finally:
        for process in (killed, taker):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    report = _report(taker)
    assert report["taken_over"] == 1 and report["lost"] == 0, report
    _assert_complete(db, version)


def test_a_stopped_workers_range_is_taken_over_after_its_lease_and_it_writes_nothing_of_it(db, database_url, tmp_path):
    version = _load(db, write_jsonl(tmp_path / "corpus.jsonl", sample_records(per_stream=3)))
    stopped = _spawn(database_url, 16, sleep=4)
    taker = None
    try:
        deadline = time.monotonic() + 60
        after_chunk, _, leased_until, attempts, _ = _wait_for_claim(db, stopped, deadline)
        # Stopped, not killed: its connection and liveness lock stay, and it renews nothing.
        os.kill(stopped.pid, signal.SIGSTOP)
        taker = _spawn(database_url, 16, sleep=0.3)
        taken_at = _wait_for_takeover(db, after_chunk, taker, deadline)
        assert taken_at >= leased_until, f"taken over at {taken_at}, before its lease ran out at {leased_until}"
        os.kill(stopped.pid, signal.SIGCONT)
        assert taker.wait(timeout=max(1.0, deadline - time.monotonic())) == 0, taker.stderr.read()
        assert stopped.wait(timeout=max(1.0, deadline - time.monotonic())) == 0, stopped.stderr.read()
    finally:
        for process in (stopped, taker):
            if process is not None and process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
                process.wait()
    taker_report, stopped_report = _report(taker), _report(stopped)
    # Woken, the stopped worker may claim another range, and lose that too: it still pauses 4 s per
    # batch, twice its lease. The taker never loses one.
    assert taker_report["taken_over"] >= 1 and taker_report["lost"] == 0, taker_report
    assert stopped_report["lost"] >= 1, stopped_report
    _assert_complete(db, version)
