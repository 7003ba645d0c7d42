"""Per-run costs that stay flat as tables grow, on a real PostgreSQL: the row counts the writes keep
equal count(*) through inserts, updates, deletes, tombstones, cascades, TRUNCATE and a re-run; the
parity check bounded by what changed still catches a vector gone missing and an orphaned vector
introduced after its last passing run; the projection refresh reads the kept per-source counts."""

from __future__ import annotations

import pytest

from semindex import chunks, embeddings, lifecycle, quality, raw_records, retained_size, row_counts
from semindex.chunking import ChunkingParameters
from tests.conftest import sample_records, write_jsonl

VERSION_KEY = "flat-32"


def _counted(db, version=None) -> dict[str, int]:
    kept = {
        "records": raw_records.live_record_count(db),
        "chunks": chunks.live_chunk_count(db),
        "lexical": row_counts.relation_rows(db, row_counts.LEXICAL_DOCUMENTS),
    }
    if version is not None:
        kept["vectors"] = row_counts.vector_rows(db, version)
    return kept


def _scanned(db, version=None) -> dict[str, int]:
    with db.connection() as conn:
        scanned = {
            "records": conn.execute("SELECT count(*) FROM semindex.raw_records WHERE NOT deleted").fetchone()[0],
            "chunks": conn.execute("SELECT count(*) FROM semindex.chunks").fetchone()[0],
            "lexical": conn.execute("SELECT count(*) FROM semindex.lexical_documents").fetchone()[0],
        }
        if version is not None:
            scanned["vectors"] = conn.execute(f"SELECT count(*) FROM {version.vectors_table}").fetchone()[0]
    return scanned


def _per_source_scanned(db, version) -> dict[tuple[str, str], tuple[int, int, int]]:
    with db.connection() as conn:
        rows = conn.execute(
            f"""SELECT r.connector_instance_id, r.stream, count(*) FILTER (WHERE NOT r.deleted),
                       (SELECT count(*) FROM semindex.chunks c WHERE (c.connector_instance_id, c.stream) = (r.connector_instance_id, r.stream)),
                       (SELECT count(*) FROM {version.vectors_table} v WHERE (v.connector_instance_id, v.stream) = (r.connector_instance_id, r.stream))
                FROM semindex.raw_records r GROUP BY 1, 2""").fetchall()
    return {(instance, stream): (records, chunk_count, vector_count) for instance, stream, records, chunk_count, vector_count in rows}


def _run(db, tmp_path, name, records):
    raw_records.ingest_file(db, write_jsonl(tmp_path / name, records))
    chunks.sync_chunks(db, ChunkingParameters())
    embeddings.backfill(db, lifecycle.ensure_registered(db, VERSION_KEY))


@pytest.fixture
def loaded(db, tmp_path):
    lifecycle.register_version(db, VERSION_KEY, "hashing-32", 32)
    records = sample_records(per_stream=6)
    _run(db, tmp_path, "first.jsonl", records)
    return db, records, lifecycle.ensure_registered(db, VERSION_KEY)


def test_kept_counts_equal_count_star_through_inserts_updates_deletes_and_a_rerun(loaded, tmp_path):
    db, records, version = loaded
    assert _counted(db, version) == _scanned(db, version)
    assert _counted(db, version)["chunks"] > 0

    # Edits (re-chunked: chunks deleted and inserted, vectors cascade), a tombstone and a new record.
    edited = [dict(r, fields={"text": f"edited text number {i} about something new"}, updated_at="2031-01-01T00:00:00Z")
              for i, r in enumerate(records[:3])]
    gone = dict(records[3], deleted=True, fields={}, updated_at="2031-01-01T00:00:00Z")
    added = dict(records[0], record_key="brand-new", fields={"text": "a record that was not there"})
    _run(db, tmp_path, "second.jsonl", [*edited, gone, added])
    assert _counted(db, version) == _scanned(db, version)

    # Writes outside the pipeline: a direct update, a delete cascading from records to chunks and
    # vectors, a statement touching several sources at once.
    with db.connection() as conn:
        conn.execute("UPDATE semindex.raw_records SET deleted = true WHERE record_key = %s", (records[4]["record_key"],))
        conn.execute("DELETE FROM semindex.raw_records WHERE record_key = %s", (records[5]["record_key"],))
        conn.execute("UPDATE semindex.raw_records SET deleted = false WHERE record_key = %s", (gone["record_key"],))
    assert _counted(db, version) == _scanned(db, version)

    # The same files again: nothing changes, the counts neither.
    before = _counted(db, version)
    _run(db, tmp_path, "second.jsonl", [*edited, gone, added])
    raw_records.ingest_file(db, tmp_path / "first.jsonl")
    assert _counted(db, version) == before == _scanned(db, version)

    # The projection refreshed from the kept per-source counts matches per-source count(*).
    retained_size.refresh_projection(db)
    scanned = _per_source_scanned(db, version)
    for source in retained_size.projection(db):
        records_now, chunk_count, vector_count = scanned[(source.connector_instance_id, source.stream)]
        assert (source.record_count, source.chunk_count) == (records_now, chunk_count)
        assert source.embedded_counts.get(VERSION_KEY, 0) == vector_count
        assert not source.dirty and source.bytes > 0

    # TRUNCATE resets; a relation whose triggers are gone is counted afresh.
    with db.connection() as conn:
        conn.execute("TRUNCATE semindex.lexical_documents")
        conn.execute(f"DROP TRIGGER semindex_rows_insert ON {version.vectors_table}")
    assert row_counts.count_relation(db, version.vectors_table, "vectors", version.version_id) is True
    assert row_counts.count_relation(db, version.vectors_table, "vectors", version.version_id) is False
    assert _counted(db, version) == _scanned(db, version)


def test_the_bounded_parity_check_catches_a_missing_and_an_orphaned_vector(loaded, tmp_path):
    db, records, version = loaded
    first = quality.check_parity(db, version)
    assert first.passed and first.diagnostics["mode"] == "full", first.summary
    again = quality.check_parity(db, version)
    assert again.passed and again.diagnostics["mode"] == "changed" and again.diagnostics["checked_ids"] == 0

    # New records after the verified run: their chunks and vectors are the ids above the watermark.
    _run(db, tmp_path, "more.jsonl", [dict(r, record_key=f"more-{i}") for i, r in enumerate(records[:4])])
    grown = quality.check_parity(db, version)
    assert grown.passed and grown.diagnostics["mode"] == "changed" and grown.diagnostics["checked_ids"] > 0

    # A vector gone from below the watermark: missing.
    with db.connection() as conn:
        victim = conn.execute(f"SELECT min(chunk_id) FROM {version.vectors_table}").fetchone()[0]
        conn.execute(f"DELETE FROM {version.vectors_table} WHERE chunk_id = %s", (victim,))
    missing = quality.check_parity(db, version, full=False)
    assert not missing.passed and missing.diagnostics["mode"] == "changed"
    assert (missing.metrics["missing"], missing.metrics["orphaned"]) == (1, 0), missing.summary
    # A failing check leaves the verified state alone: it keeps failing until repaired.
    assert not quality.check_parity(db, version, full=False).passed
    with db.connection() as conn:
        conn.execute(f"DELETE FROM semindex.chunks WHERE chunk_id = %s", (victim,))
    assert quality.check_parity(db, version, full=False).passed

    # An orphaned vector: a chunk deleted past the foreign key, and a vector written at an id
    # below the watermark whose chunk is gone.
    with db.connection() as conn:
        conn.execute(f"ALTER TABLE {version.vectors_table} DROP CONSTRAINT {version.table_name}_chunk_id_fkey")
        orphan = conn.execute(f"SELECT max(chunk_id) FROM {version.vectors_table}").fetchone()[0]
        conn.execute("DELETE FROM semindex.chunks WHERE chunk_id = %s", (orphan,))
    orphaned = quality.check_parity(db, version, full=False)
    assert not orphaned.passed and orphaned.diagnostics["mode"] == "changed"
    assert (orphaned.metrics["missing"], orphaned.metrics["orphaned"]) == (0, 1), orphaned.summary
    with db.connection() as conn:
        conn.execute(f"DELETE FROM {version.vectors_table} WHERE chunk_id = %s", (orphan,))
    assert quality.check_parity(db, version, full=False).passed
    with db.connection() as conn:
        conn.execute(f"INSERT INTO {version.vectors_table} SELECT %s, connector_instance_id, stream, record_key, field, "
                     f"content_sha256, embedding FROM {version.vectors_table} LIMIT 1", (victim,))
    reborn = quality.check_parity(db, version, full=False)
    assert (reborn.metrics["missing"], reborn.metrics["orphaned"]) == (0, 1), reborn.summary
    # The full check agrees.
    full = quality.check_parity(db, version, full=True)
    assert full.diagnostics["mode"] == "full" and (full.metrics["missing"], full.metrics["orphaned"]) == (0, 1)


def test_a_truncate_sends_the_parity_check_to_a_full_one(loaded):
    db, _, version = loaded
    assert quality.check_parity(db, version).passed
    with db.connection() as conn:
        conn.execute(f"TRUNCATE {version.vectors_table}")
    verdict = quality.check_parity(db, version)
    assert not verdict.passed and verdict.diagnostics["mode"] == "full" and verdict.metrics["missing"] > 0


def test_hnsw_recall_is_measured_again_only_after_a_write(loaded):
    from semindex import indexes

    db, _, version = loaded
    indexes.build_hnsw(db, version, indexes.HnswParameters(m=8, ef_construction=32))
    first = quality.hnsw_recall_check(db, version, threshold=0.5)
    assert "reused_measurement" not in first.diagnostics and first.metrics["queries"] > 0
    again = quality.hnsw_recall_check(db, version, threshold=0.5)
    assert again.diagnostics.get("reused_measurement") and again.metrics == first.metrics
    assert again.passed == first.passed and "0 vector rows written since" in again.summary
    # Another threshold is another verdict; writes to more than 1% of the vectors mean measuring again.
    assert "reused_measurement" not in quality.hnsw_recall_check(db, version, threshold=0.6).diagnostics
    with db.connection() as conn:
        conn.execute(f"DELETE FROM {version.vectors_table} WHERE chunk_id % 10 = 0")
    assert "reused_measurement" not in quality.hnsw_recall_check(db, version, threshold=0.6).diagnostics
    assert quality.hnsw_recall_check(db, version, threshold=0.6).diagnostics["reused_measurement"]
