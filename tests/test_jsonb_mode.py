"""The whole pipeline without pgvector (JSONB mode), on the real server, as a role that may not
create the vector extension: storage, stages, checks, brute-force search, idempotence, and the same
ranking as a vector-mode database over the same corpus."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import psycopg
import pytest
from psycopg import sql

from semindex.search import scan_engine
from semindex.errors import Conflict
from semindex.database import open_database
from semindex.lifecycle import register_version
from semindex.vectors.version import get_version
from semindex.indexes import JSONB_SKIPPED
from semindex.search import Scope, SearchRequest, Searcher
from tests.conftest import _database_url, sample_records, write_jsonl
from tests.dagster_helpers import check_verdicts, materialize_graph, metadata, raw_records_config
from tests.test_semantic_blob import _url_as, restrict_to_a_role_without_pgvector

VERSION = "tiny"
ALL_CHECKS = {"chunk_schema", "embedding_schema", "embedding_parity", "lexical_index_valid", "vector_indexes_valid", "hnsw_recall",
              "substrate_recall"}
QUERIES = ["football match result", "government election vote", "new mobile phone technology", "hello how are you"]


@dataclass
class JsonbDeployment:
    url: str  # as the role that may not create the vector extension
    corpus: Path
    instance: dg.DagsterInstance
    first_run: dg.ExecuteInProcessResult
    jsonb_warnings: list[str]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _forget_database(url: str) -> None:
    from semindex import database as database_module

    opened = database_module._open_databases.pop(url, None)
    if opened:
        opened.close()


@pytest.fixture(scope="module")
def jsonb_deployment(server_url, tmp_path_factory):
    """A fresh database without pgvector, bootstrapped and materialized once by a non-superuser."""
    role = f"jsonb_owner_{uuid.uuid4().hex[:10]}"
    database = f"t_jsonb_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(sql.Identifier(role)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    admin_url = _database_url(server_url, database)
    role_url = _url_as(admin_url, role)
    try:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            restrict_to_a_role_without_pgvector(admin, database, role)
        with psycopg.connect(role_url, autocommit=True) as probe:
            assert probe.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0] is False
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                probe.execute("CREATE EXTENSION vector")

        collect = _Collect()
        logger = logging.getLogger("semindex.database")
        logger.addHandler(collect)
        try:
            db = open_database(role_url)  # bootstraps
            db.bootstrap()  # and again: still one warning for this database
        finally:
            logger.removeHandler(collect)
        corpus = write_jsonl(tmp_path_factory.mktemp("jsonb") / "corpus.jsonl", sample_records(per_stream=4))
        register_version(db, VERSION, "hashing-32", 32)
        with dg.instance_for_test() as instance:
            first = materialize_graph(instance, role_url, VERSION, raw_records_config(corpus))
            yield JsonbDeployment(role_url, corpus, instance, first, [m for m in collect.messages if "JSONB mode" in m])
    finally:
        _forget_database(role_url)
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


# ---- a brute force of the test's own, over what is stored ----------------------------------------
def stored_rows(db, version) -> list[tuple]:
    """(chunk_id, instance, stream, record_key, field, chunk_no, vector) for every stored vector."""
    with db.connection() as conn:
        rows = conn.execute(
            f"SELECT v.chunk_id, v.connector_instance_id, v.stream, v.record_key, v.field, c.chunk_no, v.embedding "
            f"FROM {version.vectors_table} AS v JOIN semindex.chunks AS c USING (chunk_id)"
        ).fetchall()
    # JSONB mode stores each float32 in 9 significant digits, which read back to exactly that float32.
    return [(*row[:6], np.asarray(row[6].to_numpy() if hasattr(row[6], "to_numpy") else row[6], dtype=np.float32).astype(np.float64))
            for row in rows]


def brute_force(rows: list[tuple], query: np.ndarray, scope: Scope) -> list[tuple[int, str, float]]:
    """Every in-scope row as (chunk_id, record_key, cosine distance), in the planner's total order."""
    query = np.asarray(query, dtype=np.float64)
    ranked = []
    for chunk_id, instance, stream, record_key, field_name, _, vector in rows:
        if scope.connector_instance_ids and instance not in scope.connector_instance_ids:
            continue
        if scope.streams and stream not in scope.streams:
            continue
        if scope.fields and field_name not in scope.fields:
            continue
        if scope.record_keys and record_key not in scope.record_keys:
            continue
        distance = 1.0 - float(vector @ query) / (float(np.linalg.norm(vector)) * float(np.linalg.norm(query)))
        ranked.append((chunk_id, record_key, distance))
    return sorted(ranked, key=lambda item: (item[2], item[1], item[0]))


def _best_per_record(rows: list[tuple], reference: list[tuple[int, str, float]]) -> list[tuple[int, float]]:
    """The reference's first chunk of every record (instance, stream, record key), as (chunk_id, distance)."""
    record_of = {row[0]: row[1:4] for row in rows}
    seen, best = set(), []
    for chunk_id, _, distance in reference:
        if record_of[chunk_id] not in seen:
            seen.add(record_of[chunk_id])
            best.append((chunk_id, distance))
    return best


def assert_same_ranking(got: list[tuple], expected: list[tuple], *, tolerance: float = 1e-5) -> None:
    """got: (identity, distance) pairs; expected: the full reference ranking as (identity, distance).
    Same length as the reference's first len(got), same distances within `tolerance`, the same
    identity at every rank except among rows whose distances tie within `tolerance`."""
    assert [abs(g[1] - e[1]) <= tolerance for g, e in zip(got, expected)] == [True] * len(got), (got, expected[: len(got)])
    for rank, (identity, distance) in enumerate(got):
        if identity != expected[rank][0]:
            tied = {e[0] for e in expected if abs(e[1] - expected[rank][1]) <= tolerance}
            assert identity in tied and abs(distance - expected[rank][1]) <= tolerance, (rank, identity, expected[rank])
    assert len({g[0] for g in got}) == len(got)


def _scopes(rows: list[tuple]) -> list[Scope]:
    keys = sorted({row[3] for row in rows if row[1] == "bbc"})
    return [
        Scope(),
        Scope(connector_instance_ids=("bbc",)),
        Scope(streams=("sport", "tech", "messages")),
        Scope(connector_instance_ids=("bbc",), fields=("headline",)),
        Scope(connector_instance_ids=("bbc", "chitchat-main"), record_keys=tuple(keys[::3])),
    ]


# ---- tests -----------------------------------------------------------------------------------------
def test_bootstrap_and_every_stage_run_in_jsonb_mode(jsonb_deployment):
    db = open_database(jsonb_deployment.url)
    assert db.vector_mode == "jsonb"
    assert len(jsonb_deployment.jsonb_warnings) == 1 and "permission denied" in jsonb_deployment.jsonb_warnings[0]
    first = jsonb_deployment.first_run
    assert first.success
    assert check_verdicts(first) == dict.fromkeys(ALL_CHECKS, True)
    column = metadata(first, "vector_column")
    assert column["storage_mode"] == "jsonb" and column["column_type"] == "jsonb"
    assert column["dagster/row_count"] > 0
    hnsw = metadata(first, "hnsw_index")
    assert hnsw["action"] == JSONB_SKIPPED and hnsw["rows_added"] == 0
    assert metadata(first, "partial_index_set")["action"] == JSONB_SKIPPED
    assert metadata(first, "embeddings")["encoded_texts"] > 0
    version = get_version(db, VERSION)
    with db.connection() as conn:
        types = dict(conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute AS a "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped", (version.vectors_table,)
        ).fetchall())
        assert types["embedding"] == "jsonb"
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE schemaname = 'semindex' AND indexdef ILIKE '%USING hnsw%'").fetchone()[0] == 0
        # The table refuses what vector(32) would refuse.
        with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
            conn.execute(f"UPDATE {version.vectors_table} SET embedding = '[1, 2]' WHERE chunk_id = (SELECT min(chunk_id) FROM {version.vectors_table})")
    with db.connection() as conn:
        # Every chunk has one vector, and chunks sharing a text share the stored vector.
        stored = conn.execute(
            f"SELECT count(*), count(DISTINCT content_sha256), count(DISTINCT (content_sha256, embedding)) FROM {version.vectors_table}"
        ).fetchone()
        chunks = conn.execute("SELECT count(*) FROM semindex.chunks").fetchone()[0]
    assert stored[0] == chunks and stored[1] == stored[2]
    checks = {e.check_name: e for e in first.get_asset_check_evaluations()}
    assert checks["hnsw_recall"].metadata["diagnostics"].value["mode"] == "jsonb"
    assert checks["hnsw_recall"].metadata["diagnostics"].value["recall"] == "not applicable"


@pytest.mark.parametrize("fetch_rows", [2000, 7])
def test_semantic_search_is_an_exact_brute_force_that_ranks_before_it_limits(jsonb_deployment, monkeypatch, fetch_rows):
    # 7 rows a fetch: the bounded top-k is carried over many batches, and cut after each.
    monkeypatch.setattr(scan_engine, "FETCH_ROWS", fetch_rows)
    db = open_database(jsonb_deployment.url)
    version = get_version(db, VERSION)
    rows = stored_rows(db, version)
    searcher = Searcher(db)
    for text in QUERIES:
        query = searcher.semantic.query_vector(version, text)
        for scope in _scopes(rows):
            reference = brute_force(rows, query, scope)
            assert reference, scope
            by_chunk = [(chunk_id, distance) for chunk_id, _, distance in reference]
            by_record = _best_per_record(rows, reference)
            for k in (1, 10, 50):
                # Passages: every scoped chunk ranked; records: each record's nearest chunk.
                for unit, expected in (("chunks", by_chunk), ("records", by_record)):
                    response = searcher.search(SearchRequest(text, mode="semantic", k=k, scope=scope, version_key=VERSION, unit=unit))
                    hits = response.hits
                    assert len(hits) == min(k, len(expected)), (scope, k, unit)
                    assert set(response.meta.semantic_plans.values()) == {"jsonb_exact"}
                    assert_same_ranking([(hit.chunk_id, hit.distance) for hit in hits], expected)


def test_lexical_and_hybrid_search_work_without_pgvector(jsonb_deployment):
    db = open_database(jsonb_deployment.url)
    searcher = Searcher(db)
    lexical = searcher.search(SearchRequest("election", mode="lexical", k=10))
    assert lexical.hits and all("election" in hit.snippet.lower() for hit in lexical.hits)
    scoped = searcher.search(SearchRequest("the", mode="lexical", k=10, scope=Scope(streams=("sport",))))
    assert scoped.hits and {hit.stream for hit in scoped.hits} == {"sport"}
    for fusion in ("rrf", "interleave"):
        hybrid = searcher.search(SearchRequest("election results", mode="hybrid", k=10, fusion=fusion, version_key=VERSION))
        assert len(hybrid.hits) == 10 and all("fused" in hit.scores for hit in hybrid.hits)
        assert set(hybrid.meta.semantic_plans.values()) == {"jsonb_exact"}
        assert len({(hit.connector_instance_id, hit.stream, hit.record_key) for hit in hybrid.hits}) == 10


def _fingerprint(db, version) -> tuple:
    with db.connection() as conn:
        return conn.execute(
            f"SELECT count(*), md5(string_agg(chunk_id::text || ':' || embedding::text, ',' ORDER BY chunk_id)) "
            f"FROM {version.vectors_table}"
        ).fetchone()


def test_a_rerun_of_the_graph_changes_nothing(jsonb_deployment):
    db = open_database(jsonb_deployment.url)
    version = get_version(db, VERSION)
    before = _fingerprint(db, version)
    second = materialize_graph(jsonb_deployment.instance, jsonb_deployment.url, VERSION, raw_records_config(jsonb_deployment.corpus))
    assert second.success and check_verdicts(second) == dict.fromkeys(ALL_CHECKS, True)
    assert metadata(second, "embeddings")["encoded_texts"] == 0
    assert metadata(second, "embeddings")["rows_added"] == 0
    assert metadata(second, "chunks")["rows_added"] == 0
    assert metadata(second, "hnsw_index")["action"] == JSONB_SKIPPED
    assert metadata(second, "vector_column")["storage_mode"] == "jsonb"
    assert _fingerprint(db, version) == before


def test_vector_mode_ranks_the_same_corpus_the_same_way(jsonb_deployment, db, database_url):
    assert db.vector_mode == "vector"
    register_version(db, VERSION, "hashing-32", 32)
    with dg.instance_for_test() as instance:
        assert materialize_graph(instance, database_url, VERSION, raw_records_config(jsonb_deployment.corpus)).success
    jsonb_db = open_database(jsonb_deployment.url)
    jsonb_version, vector_version = get_version(jsonb_db, VERSION), get_version(db, VERSION)

    def identities(database, version) -> dict[int, tuple]:
        return {row[0]: row[1:6] for row in stored_rows(database, version)}

    jsonb_ids, vector_ids = identities(jsonb_db, jsonb_version), identities(db, vector_version)
    assert sorted(jsonb_ids.values()) == sorted(vector_ids.values())
    # Both modes store the encoder's float32 values.
    jsonb_vectors = {jsonb_ids[row[0]]: row[6] for row in stored_rows(jsonb_db, jsonb_version)}
    for row in stored_rows(db, vector_version):
        np.testing.assert_array_equal(jsonb_vectors[vector_ids[row[0]]], row[6])

    jsonb_searcher, vector_searcher = Searcher(jsonb_db), Searcher(db)
    rows = stored_rows(db, vector_version)
    for text in QUERIES:
        query = vector_searcher.semantic.query_vector(vector_version, text)
        for scope in _scopes(rows):
            # The full ranking, so rows that tie (within float32 rounding) at the page's end count as tied.
            reference = [(vector_ids[chunk_id], distance) for chunk_id, _, distance in brute_force(rows, query, scope)]
            for k in (1, 10, 50):
                request = SearchRequest(text, mode="semantic", k=k, scope=scope, version_key=VERSION, unit="chunks")
                in_jsonb = [(jsonb_ids[hit.chunk_id], hit.distance) for hit in jsonb_searcher.search(request).hits]
                in_vector = [(vector_ids[hit.chunk_id], hit.distance) for hit in vector_searcher.search(request).hits]
                assert len(in_jsonb) == len(in_vector) == min(k, len(reference))
                assert_same_ranking(in_vector, reference)
                assert_same_ranking(in_jsonb, reference)
                # Hence the same order as each other, apart from rows tied within float32 rounding.
                assert all(abs(a[1] - b[1]) <= 1e-5 for a, b in zip(in_jsonb, in_vector, strict=True))
                assert sum(a[0] != b[0] for a, b in zip(in_jsonb, in_vector, strict=True)) <= sum(
                    1 for a in in_jsonb if sum(abs(a[1] - r[1]) <= 1e-5 for r in reference) > 1)
        lexical = SearchRequest(text, mode="lexical", k=20)
        assert ([jsonb_ids[h.chunk_id] for h in jsonb_searcher.search(lexical).hits]
                == [vector_ids[h.chunk_id] for h in vector_searcher.search(lexical).hits])


def test_the_numpy_distances_are_pgvectors_for_every_metric(db):
    from pgvector import Vector

    from semindex.vectors.metric import metric_named

    rng = np.random.default_rng(5)
    matrix = rng.normal(size=(40, 16)).astype(np.float32)
    matrix[7] = 0.0  # cosine of a zero vector: NaN in pgvector, sorted last (inf) by both plans
    query = rng.normal(size=16).astype(np.float32)
    with db.connection() as conn:
        measured = np.array(conn.execute(
            "SELECT v <=> %(q)s, v <-> %(q)s, v <#> %(q)s FROM unnest(%(m)s::vector[]) WITH ORDINALITY AS t(v, n) ORDER BY n",
            {"q": Vector(query), "m": [Vector(row) for row in matrix]},
        ).fetchall(), dtype=np.float64)
    measured[:, 0] = np.where(np.isnan(measured[:, 0]), np.inf, measured[:, 0])
    as_stored = matrix.astype(np.float64)  # what JSONB mode stores and parses back
    for column, metric in enumerate(("cosine", "l2", "ip")):
        ours = metric_named(metric).distances(as_stored, query.astype(np.float64))
        np.testing.assert_allclose(ours, measured[:, column], rtol=0, atol=1e-5)
    assert np.isinf(metric_named("cosine").distances(as_stored, query.astype(np.float64))[7])


def test_the_vector_column_stage_refuses_a_table_of_another_type_in_jsonb_mode(jsonb_deployment):
    from semindex.vector_column import vector_column_stage

    db = open_database(jsonb_deployment.url)
    version = register_version(db, "tiny-real", "hashing-16", 16)
    with db.connection() as conn:
        conn.execute(f"CREATE TABLE {version.vectors_table} (LIKE {get_version(db, VERSION).vectors_table})")
        conn.execute(f"ALTER TABLE {version.vectors_table} ALTER COLUMN embedding TYPE real[] USING NULL")
    try:
        with pytest.raises(Conflict, match=rf"{version.vectors_table}\.embedding is real\[\], but this database stores "
                                           r"vectors as jsonb \(no pgvector\), where version 'tiny-real' needs jsonb"):
            vector_column_stage(db, version.version_key)
    finally:
        with db.connection() as conn:
            conn.execute(f"DROP TABLE {version.vectors_table}")


def test_the_stored_json_text_reads_back_to_the_same_float32(db):
    from semindex.vectors.storage import JSONB, jsonb_vector_text

    rng = np.random.default_rng(11)
    matrix = rng.normal(scale=rng.choice([1e-30, 1e-5, 1.0, 1e20], size=(500, 1)), size=(500, 24)).astype(np.float32)
    matrix[0, :4] = [np.finfo(np.float32).max, np.finfo(np.float32).tiny, np.float32(1e-45), -0.0]
    texts = [jsonb_vector_text(row) for row in matrix]
    assert all(np.array_equal(np.asarray(json.loads(text), dtype=np.float32), row) for text, row in zip(texts, matrix))
    np.testing.assert_array_equal(JSONB.parse(texts, 24, "semindex.chunk_vectors_v0"), matrix.astype(np.float64))
    # As PostgreSQL writes them back out (numeric drops the exponents: 340282347000...0).
    with db.connection() as conn:
        stored = [row[0] for row in conn.execute("SELECT t::jsonb::text FROM unnest(%s::text[]) WITH ORDINALITY AS u(t, n) ORDER BY n", (texts,))]
    assert stored[0].startswith("[340282347000000000000000000000000000000, ")
    np.testing.assert_array_equal(JSONB.parse(stored, 24, "semindex.chunk_vectors_v0"), matrix.astype(np.float64))
    with pytest.raises(Conflict, match="not a flat array of 24 numbers"):
        JSONB.parse(texts[:2] + ["[1, 2]"], 24, "semindex.chunk_vectors_v0")
