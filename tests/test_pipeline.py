"""The whole asset graph, materialized in-process on a real PostgreSQL."""

import dagster as dg
import numpy as np
import pytest

from semindex.embeddings import vector_count
from semindex.vectors.version import get_version
from semindex.encoders import load_encoder
from semindex.search import semantic_search
from tests.conftest import sample_records, write_jsonl
from tests.dagster_helpers import (
    check_verdicts,
    materialize_graph,
    metadata,
    raw_records_config,
    register_tiny_version,
)

ALL_CHECKS = {"chunk_schema", "embedding_schema", "embedding_parity", "lexical_index_valid", "vector_indexes_valid", "hnsw_recall",
              "substrate_recall"}


def _chunk_vectors(db, version):
    with db.connection() as conn:
        return {
            chunk_id: (record_key, content, np.asarray(embedding.to_numpy()))
            for chunk_id, record_key, content, embedding in conn.execute(
                f"SELECT v.chunk_id, c.record_key, c.content, v.embedding FROM {version.vectors_table} v "
                "JOIN semindex.chunks c USING (chunk_id)"
            )
        }


@pytest.mark.real_model
def test_whole_graph_with_the_real_model_then_a_rerun_encodes_nothing(db, database_url, small_corpus):
    from semindex.lifecycle import register_version

    register_version(db)  # minilm-l6-v2, 384-d cosine
    with dg.instance_for_test() as instance:
        first = materialize_graph(instance, database_url, "minilm-l6-v2", raw_records_config(small_corpus))
        assert first.success
        assert check_verdicts(first) == dict.fromkeys(ALL_CHECKS, True)
        embedded = metadata(first, "embeddings")
        version = get_version(db, "minilm-l6-v2")
        assert embedded["dagster/row_count"] == vector_count(db, version) > 0
        assert embedded["encoded_texts"] > 0
        for asset in ("raw_records", "chunks", "embeddings", "vector_column", "hnsw_index", "lexical_index",
                      "retained_size_projection", "partial_index_set"):
            assert {"dagster/row_count", "rows_added", "rows_changed", "rows_removed", "duration_seconds",
                    "throughput_rows_per_second"} <= set(metadata(first, asset))

        hits = semantic_search(db, "football match result", k=5, version_key="minilm-l6-v2")
        assert len(hits) == 5 and any(hit.stream == "sport" for hit in hits[:3])

        second = materialize_graph(instance, database_url, "minilm-l6-v2", raw_records_config(small_corpus))
        assert metadata(second, "embeddings")["encoded_texts"] == 0
        assert metadata(second, "embeddings")["rows_added"] == 0
        assert metadata(second, "chunks")["rows_added"] == 0
        assert metadata(second, "hnsw_index")["action"] == "exists"
        assert all(check_verdicts(second).values())


def test_an_edited_record_re_embeds_only_its_own_changed_chunks(db, database_url, tmp_path):
    records = sample_records(per_stream=6)
    version = register_tiny_version(database_url)
    with dg.instance_for_test() as instance:
        materialize_graph(instance, database_url, version.version_key, raw_records_config(write_jsonl(tmp_path / "a.jsonl", records)))
        before = _chunk_vectors(db, version)

        # A long BBC article: edit only its last paragraph, so its early chunks keep their identity.
        article = next(r for r in records if r["connector_id"] == "bbc-news" and len(r["fields"]["body"]) > 2500)
        edited = dict(article, fields=dict(article["fields"], body=article["fields"]["body"] + " Zebra quokka addendum."),
                      updated_at="2031-01-01T00:00:00Z")
        result = materialize_graph(instance, database_url, version.version_key,
                                   raw_records_config(write_jsonl(tmp_path / "b.jsonl", [edited])))
        after = _chunk_vectors(db, version)

    added = set(after) - set(before)
    removed = set(before) - set(after)
    assert added and removed
    assert {after[c][0] for c in added} == {article["record_key"]}
    assert {before[c][0] for c in removed} == {article["record_key"]}
    assert metadata(result, "embeddings")["dagster/row_count"] == len(after)
    assert metadata(result, "embeddings")["encoded_texts"] == len({after[c][1] for c in added})
    assert metadata(result, "chunks")["records_rechunked"] == 1
    # Every other chunk kept its id and its vector; the article's unchanged head kept its chunks.
    for chunk_id in set(before) & set(after):
        np.testing.assert_array_equal(before[chunk_id][2], after[chunk_id][2])
    assert any(before[c][0] == article["record_key"] for c in set(before) & set(after))
    # New vectors are the encoder's output for the new text.
    encoder = load_encoder(version.encoder_name)
    for chunk_id in added:
        np.testing.assert_allclose(after[chunk_id][2], encoder.encode([after[chunk_id][1]])[0], atol=1e-6)


def test_a_deleted_record_leaves_chunks_vectors_and_search(db, database_url, tmp_path):
    records = sample_records(per_stream=4)
    version = register_tiny_version(database_url)
    target = next(r for r in records if r["connector_id"] == "bbc-news")
    query = target["fields"]["headline"]
    with dg.instance_for_test() as instance:
        materialize_graph(instance, database_url, version.version_key, raw_records_config(write_jsonl(tmp_path / "a.jsonl", records)))
        assert semantic_search(db, query, k=1, version_key=version.version_key)[0].record_key == target["record_key"]

        tombstone = dict(target, deleted=True, fields={}, updated_at="2031-01-01T00:00:00Z")
        result = materialize_graph(instance, database_url, version.version_key,
                                   raw_records_config(write_jsonl(tmp_path / "b.jsonl", [tombstone])))
    assert metadata(result, "raw_records")["rows_removed"] == 1
    assert metadata(result, "chunks")["rows_removed"] > 0
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM semindex.chunks WHERE record_key = %s", (target["record_key"],)).fetchone()[0] == 0
        assert conn.execute(f"SELECT count(*) FROM {version.vectors_table} WHERE record_key = %s", (target["record_key"],)).fetchone()[0] == 0
    assert target["record_key"] not in {hit.record_key for hit in semantic_search(db, query, k=20, version_key=version.version_key)}
    assert all(check_verdicts(result).values())


def test_the_projection_counts_every_source(db, database_url, small_corpus):
    from semindex.retained_size import projection

    version = register_tiny_version(database_url)
    with dg.instance_for_test() as instance:
        materialize_graph(instance, database_url, version.version_key, raw_records_config(small_corpus))
    sources = {(s.connector_instance_id, s.stream): s for s in projection(db)}
    assert len(sources) == 7 and not any(s.dirty for s in sources.values())
    with db.connection() as conn:
        per_source = dict(
            ((i, s), n) for i, s, n in conn.execute(
                "SELECT connector_instance_id, stream, count(*) FROM semindex.chunks GROUP BY 1, 2"
            )
        )
    for key, source in sources.items():
        assert source.record_count == 12
        assert source.chunk_count == per_source[key]
        assert source.embedded_counts == {version.version_key: per_source[key]}
        assert source.bytes > 0
