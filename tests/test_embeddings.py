"""Stage 3 on a real PostgreSQL: dimension gate, dedupe, and resume after SIGKILL."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from semindex import chunks, embeddings, raw_records
from semindex.chunking import ChunkingParameters
from semindex.encoders import load_encoder
from semindex import lifecycle
from semindex.errors import Conflict
from semindex.vectors.version import get_version
from tests.conftest import sample_records, write_jsonl


def _load(db, tmp_path, per_stream):
    raw_records.ingest_file(db, write_jsonl(tmp_path / "corpus.jsonl", sample_records(per_stream)))
    chunks.sync_chunks(db, ChunkingParameters())


def _vectors(db, version):
    with db.connection() as conn:
        return {
            chunk_id: (content, embedding.to_numpy())
            for chunk_id, content, embedding in conn.execute(
                f"SELECT v.chunk_id, c.content, v.embedding FROM {version.vectors_table} v JOIN semindex.chunks c USING (chunk_id)"
            )
        }


def test_a_dimension_mismatch_fails_before_anything_is_written(db, tmp_path):
    _load(db, tmp_path, per_stream=2)
    # Refused at registration: the version is never stored, so no sensor or run can backfill it.
    with pytest.raises(embeddings.DimensionMismatch) as caught:
        lifecycle.register_version(db, "wrong-dims", "hashing-64", dimensions=384)
    assert str(caught.value) == (
        "encoder 'hashing-64' produces 64-dimensional vectors, but embedding version 'wrong-dims' "
        "declares 384 dimensions; nothing was written"
    )
    with pytest.raises(LookupError):
        get_version(db, "wrong-dims")
    # A version stored without the probe is still refused by the backfill, before any table exists.
    version = lifecycle.register_version(db, "wrong-dims", "hashing-64", dimensions=384, probe=False)
    with pytest.raises(embeddings.DimensionMismatch):
        embeddings.backfill(db, version)
    with db.connection() as conn:
        assert conn.execute("SELECT to_regclass(%s)", (version.vectors_table,)).fetchone()[0] is None


def test_re_registering_a_version_differently_is_refused(db):
    lifecycle.register_version(db, "v", "hashing-32", 32)
    with pytest.raises(Conflict, match="already registered"):
        lifecycle.register_version(db, "v", "hashing-64", 64)


def test_texts_already_embedded_are_never_encoded_again(db, tmp_path):
    repeated = [
        {"connector_id": "chat", "connector_instance_id": "c1", "stream": "messages", "record_key": f"m{i}",
         "fields": {"text": "ok thanks"}, "updated_at": "2024-01-01T00:00:00Z"}
        for i in range(50)
    ]
    raw_records.ingest_file(db, write_jsonl(tmp_path / "r.jsonl", repeated))
    chunks.sync_chunks(db, ChunkingParameters())
    version = lifecycle.register_version(db, "tiny", "hashing-32", 32)
    report = embeddings.backfill(db, version, batch_size=7)
    assert (report.chunks, report.encoded_texts) == (50, 1)
    assert embeddings.vector_count(db, version) == 50


@pytest.mark.real_model
def test_a_backfill_killed_part_way_resumes_to_exactly_the_uninterrupted_rows(db, database_url, tmp_path):
    _load(db, tmp_path, per_stream=15)
    version = lifecycle.register_version(db)
    with db.connection() as conn:
        total = conn.execute("SELECT count(*) FROM semindex.chunks").fetchone()[0]
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.backfill_worker", database_url, version.version_key, "16"],
        cwd=os.getcwd(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        watermark = 0
        while time.monotonic() < deadline and worker.poll() is None:
            with db.connection() as conn:
                row = conn.execute("SELECT watermark FROM semindex.embedding_backfill WHERE version_id = %s",
                                   (version.version_id,)).fetchone()
            watermark = row[0] if row else 0
            if watermark > 0:
                break
            time.sleep(0.05)
        assert watermark > 0, "the worker never committed a batch"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()

    partial = embeddings.vector_count(db, version)
    assert 0 < partial < total, f"the kill landed after {partial} of {total} rows"

    report = embeddings.backfill(db, version, batch_size=64)
    assert report.chunks == total - partial  # resumed at the watermark: nothing redone

    stored = _vectors(db, version)
    assert len(stored) == total
    with db.connection() as conn:
        assert conn.execute(
            f"SELECT count(*) - count(DISTINCT chunk_id) FROM {version.vectors_table}"
        ).fetchone()[0] == 0
    encoder = load_encoder(version.encoder_name)
    contents = [content for content, _ in stored.values()]
    expected = encoder.encode(contents)
    actual = np.stack([vector for _, vector in stored.values()])
    # The uninterrupted run's rows: the model's vectors for the same texts (batching changes float
    # rounding only).
    np.testing.assert_allclose(actual, expected, atol=1e-5)
