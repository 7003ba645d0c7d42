"""Stage 5 and 7 on a real PostgreSQL: invalid-index rebuild, the advisory lock, the partial-index set."""

import threading

import psycopg
import pytest

from semindex import chunks, embeddings, indexes, lifecycle, raw_records, retained_size
from semindex.chunking import ChunkingParameters
from semindex.errors import InvalidInput
from semindex.partial_indexes import (
    HotFieldBand,
    HotSourceBand,
    managed_partial_indexes,
    partial_index_name,
    sync_partial_indexes,
)
from tests.conftest import sample_records, write_jsonl
from tests.serving import serve

PARAMETERS = indexes.HnswParameters(m=8, ef_construction=32)


@pytest.fixture
def loaded(db, tmp_path):
    raw_records.ingest_file(db, write_jsonl(tmp_path / "corpus.jsonl", sample_records(per_stream=30)))
    chunks.sync_chunks(db, ChunkingParameters())
    version = lifecycle.register_version(db, "tiny", "hashing-64", 64)
    embeddings.backfill(db, version)
    return version


def test_an_index_left_invalid_by_an_interrupted_build_is_rebuilt(db, database_url, loaded):
    version = loaded
    # Interrupt a real concurrent build, deterministically: an open snapshot makes CREATE INDEX
    # CONCURRENTLY wait after it has created the (not yet valid) index, and we cancel it there.
    failure = {}
    with psycopg.connect(database_url) as reader:
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute(f"SELECT count(*) FROM {version.vectors_table}")

        def build():
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("SET application_name = 'interrupted_build'")
                try:
                    conn.execute(
                        f"CREATE INDEX CONCURRENTLY {version.hnsw_index_name} ON {version.vectors_table} "
                        "USING hnsw (embedding vector_cosine_ops) WHERE represents_text"
                    )
                except psycopg.errors.QueryCanceled as error:
                    failure["error"] = error

        builder = threading.Thread(target=build)
        builder.start()
        with psycopg.connect(database_url, autocommit=True) as watcher:
            for _ in range(600):
                waiting = watcher.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'interrupted_build' "
                    "AND wait_event_type = 'Lock'"
                ).fetchone()
                if waiting:
                    watcher.execute("SELECT pg_cancel_backend(%s)", (waiting[0],))
                    break
                threading.Event().wait(0.05)
            builder.join(timeout=60)
        reader.rollback()
    assert "error" in failure
    assert indexes.index_validity(db, [version.hnsw_index_name]) == {version.hnsw_index_name: False}

    build = indexes.build_hnsw(db, version, PARAMETERS)

    assert build.action == "rebuilt"
    assert indexes.index_validity(db, [version.hnsw_index_name]) == {version.hnsw_index_name: True}
    assert "m='8'" in indexes.index_definition(db, version.hnsw_index_name)
    assert indexes.build_hnsw(db, version, PARAMETERS).action == "exists"


def test_the_advisory_lock_keeps_two_runs_from_building_the_same_index(db, database_url, loaded):
    version = loaded
    outcome = {}
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext('semindex.index:' || %s))", (f"semindex.{version.hnsw_index_name}",))
        builder = threading.Thread(target=lambda: outcome.setdefault("build", indexes.build_hnsw(db, version, PARAMETERS)))
        builder.start()
        builder.join(timeout=1.5)
        # Still waiting on the lock, and nothing was built behind the holder's back.
        assert builder.is_alive()
        assert indexes.index_validity(db, [version.hnsw_index_name]) == {version.hnsw_index_name: None}
        holder.execute("SELECT pg_advisory_unlock(hashtext('semindex.index:' || %s))", (f"semindex.{version.hnsw_index_name}",))
    builder.join(timeout=60)
    assert outcome["build"].action == "built"
    assert indexes.index_validity(db, [version.hnsw_index_name]) == {version.hnsw_index_name: True}


def test_a_serving_table_gets_its_record_key_index_while_writes_go_on(db, database_url, loaded):
    """A table made before its record-key btree gets it with the rest of its search indexes; once
    the version serves, concurrently: while the build waits for an open snapshot, a write to the
    table goes through (a plain CREATE INDEX would hold it for the whole build)."""
    version = loaded
    index_name = f"{version.table_name}_record_key"
    indexes.build_hnsw(db, version, PARAMETERS)
    assert indexes.index_validity(db, [index_name]) == {index_name: True}
    serve(db, version.version_key)
    indexes.drop_index(db, index_name)
    outcome = {}
    with psycopg.connect(database_url) as reader:
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute(f"SELECT count(*) FROM {version.vectors_table}")
        builder = threading.Thread(target=lambda: outcome.setdefault("build", indexes.build_hnsw(db, version, PARAMETERS)))
        builder.start()
        with psycopg.connect(database_url, autocommit=True) as writer:
            waiting = None
            for _ in range(600):
                waiting = writer.execute(
                    "SELECT pid FROM pg_stat_activity WHERE query LIKE %s AND wait_event_type = 'Lock'",
                    (f"%CREATE INDEX CONCURRENTLY%{index_name}%",)).fetchone()
                if waiting:
                    break
                threading.Event().wait(0.05)
            assert waiting, "the record-key index was not built concurrently"
            writer.execute("SET lock_timeout = '5s'")
            updated = writer.execute(
                f"UPDATE {version.vectors_table} SET field = field WHERE chunk_id = (SELECT min(chunk_id) FROM {version.vectors_table})")
            assert updated.rowcount == 1
        reader.rollback()
        builder.join(timeout=60)
    assert outcome["build"].action == "exists"  # the graph was already there
    assert indexes.index_validity(db, [index_name]) == {index_name: True}


def test_the_lexical_index_is_the_scope_shaped_gin(db, loaded):
    build = indexes.build_lexical_index(db)
    definition = indexes.index_definition(db, indexes.LEXICAL_INDEX_NAME)
    assert build.action == "built"
    assert "USING gin (connector_instance_id, stream, document)" in definition


ADVERSARIAL_ID = "evil'); DROP TABLE semindex.chunks; --$$ \\ \"quoted\" $tag$ ‘look-alike’"


def test_the_partial_index_set_adds_and_drops_members_even_for_an_adversarial_connector_id(db, tmp_path):
    records = [
        {"connector_id": "odd", "connector_instance_id": ADVERSARIAL_ID, "stream": "s;1", "record_key": f"a{i}",
         "fields": {"text": f"adversarial message number {i}"}, "updated_at": "2024-01-01T00:00:00Z"}
        for i in range(40)
    ] + [
        {"connector_id": "plain", "connector_instance_id": "plain", "stream": "messages", "record_key": f"p{i}",
         "fields": {"text": f"plain message {i}"}, "updated_at": "2024-01-01T00:00:00Z"}
        for i in range(30)
    ] + [
        {"connector_id": "big", "connector_instance_id": "big", "stream": "messages", "record_key": f"b{i}",
         "fields": {"text": f"big source message {i}"}, "updated_at": "2024-01-01T00:00:00Z"}
        for i in range(300)
    ]
    raw_records.ingest_file(db, write_jsonl(tmp_path / "r.jsonl", records))
    chunks.sync_chunks(db, ChunkingParameters())
    version = lifecycle.register_version(db, "tiny", "hashing-32", 32)
    embeddings.backfill(db, version)
    retained_size.refresh_projection(db)

    # 370 vectors: the band 20..37 rows (10%) holds the plain source (30) only; the big one is too
    # large a share and the adversarial one (40) just above the cap.
    band = HotSourceBand(min_rows=20, max_share=0.10, max_sources=8)
    first = sync_partial_indexes(db, version, band, PARAMETERS)
    assert [(m["connector_instance_id"], m["stream"]) for m in first.members] == [("plain", "messages")]

    # Widen the band: the adversarial source enters, with a safe name and an exact predicate.
    wide = HotSourceBand(min_rows=20, max_share=0.5, max_sources=1)
    second = sync_partial_indexes(db, version, wide, PARAMETERS)
    evil_index = partial_index_name(version, ADVERSARIAL_ID, "s;1")
    assert [m["index"] for m in second.members] == [evil_index]
    assert second.created == [evil_index]
    assert second.dropped == [partial_index_name(version, "plain", "messages")]
    assert managed_partial_indexes(db, version) == [evil_index]
    assert indexes.index_validity(db, [evil_index]) == {evil_index: True}
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM semindex.chunks").fetchone()[0] == 370
        predicate = conn.execute(
            "SELECT pg_get_expr(i.indpred, i.indrelid) FROM pg_index i WHERE i.indexrelid = to_regclass(%s)",
            (f"semindex.{evil_index}",),
        ).fetchone()[0]
        # The predicate selects exactly the adversarial source's rows.
        matched = conn.execute(
            f"SELECT count(*) FROM {version.vectors_table} WHERE {predicate}"
        ).fetchone()[0]
    assert matched == 40

    # Narrow the band to nothing: every member is dropped.
    third = sync_partial_indexes(db, version, HotSourceBand(min_rows=10_000), PARAMETERS)
    assert third.members == [] and third.dropped == [evil_index]
    assert indexes.index_validity(db, [evil_index]) == {evil_index: None}


def test_the_recall_gate_fails_a_poor_index_and_passes_a_good_one(db, loaded):
    from semindex.quality import hnsw_recall

    version = loaded
    indexes.build_hnsw(db, version, PARAMETERS)
    good = hnsw_recall(db, version, queries=50, ef_search=100)
    # ef_search 1 walks almost nothing of the graph: fewer and worse neighbours than exact search.
    poor = hnsw_recall(db, version, queries=50, ef_search=1)
    assert good.passed and good.diagnostics["recall"] >= 0.95
    assert not poor.passed and poor.diagnostics["recall"] < 0.5


@pytest.mark.parametrize("band, named", [
    (lambda: HotSourceBand(min_rows=0), "min_rows=0"),
    (lambda: HotSourceBand(max_share=1.5), "max_share=1.5"),
    (lambda: HotSourceBand(max_sources=-1), "max_sources=-1"),
    (lambda: HotFieldBand(min_rows=0), "min_rows=0"),
    (lambda: HotFieldBand(max_share=0), "max_share=0"),
    (lambda: HotFieldBand(max_fields=-2), "max_fields=-2"),
])
def test_a_band_out_of_range_is_refused_naming_the_value(band, named):
    with pytest.raises(InvalidInput, match=named):
        band()
