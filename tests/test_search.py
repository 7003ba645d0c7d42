"""Search on a real PostgreSQL: exact parity with numpy, ANN completeness and recall at every
selectivity, scope isolation, lexical windowing, the query-vector cache and the fan-out bound."""

from __future__ import annotations

import threading
import uuid

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semindex import chunks, embeddings, indexes, raw_records, retained_size
from semindex.chunking import ChunkingParameters
from semindex.database import open_database
from semindex.search.fanout import SearchFanOut
from semindex.partial_indexes import HotSourceBand, sync_partial_indexes
from semindex.search.query_cache import QueryVectorCache
from semindex.search import PlannerSettings, Scope, Searcher, SearchRequest, semantic_overscan
from semindex.search.response import LexicalMeta
from semindex import lifecycle
from semindex.vectors.version import get_version
from tests.conftest import _database_url, sample_records, write_jsonl
from tests.synthetic_vectors import clustered_vectors, load_sources
from tests.serving import serve


@pytest.fixture(scope="module")
def module_database(server_url, tmp_path_factory):
    name = f"m_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _database_url(server_url, name)
    yield open_database(url)
    from semindex import database as database_module

    database_module._open_databases.pop(url).close()
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def corpus_db(module_database, tmp_path_factory):
    """The real sample (8 records a stream), chunked, embedded under two versions of different
    dimensions, indexed, projected."""
    from semindex.builders.sample_corpus import iter_chitchat_messages

    db = module_database
    # One busy source where a very common term matches far more chunks than the lexical window.
    busy = [dict(r, connector_instance_id="chat-busy") for r in iter_chitchat_messages(limit=3000)
            if " the " in f" {r['fields']['text'].lower()} "][:300]
    path = write_jsonl(tmp_path_factory.mktemp("corpus") / "c.jsonl", sample_records(per_stream=8) + busy)
    raw_records.ingest_file(db, path)
    chunks.sync_chunks(db, ChunkingParameters())
    for key, dims in (("hash-64", 64), ("hash-32", 32)):
        version = lifecycle.register_version(db, key, f"hashing-{dims}", dims)
        embeddings.backfill(db, version)
        indexes.build_hnsw(db, version, indexes.HnswParameters())
    indexes.build_lexical_index(db)
    retained_size.refresh_projection(db)
    serve(db, "hash-64")
    return db


def _stored(db, version, scope: Scope):
    with db.connection() as conn:
        rows = conn.execute(
            f"SELECT chunk_id, connector_instance_id, stream, field, record_key, embedding FROM {version.vectors_table}"
        ).fetchall()
    keep = [
        row for row in rows
        if (not scope.connector_instance_ids or row[1] in scope.connector_instance_ids)
        and (not scope.streams or row[2] in scope.streams)
        and (not scope.fields or row[3] in scope.fields)
        and (not scope.record_keys or row[4] in scope.record_keys)
    ]
    return keep, np.stack([row[5].to_numpy() for row in keep]).astype(np.float64) if keep else np.zeros((0, version.dimensions))


def _cosine_distances(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    query = query.astype(np.float64)
    return 1.0 - (matrix @ query) / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))


@pytest.mark.parametrize("version_key", ["hash-64", "hash-32"])
@pytest.mark.parametrize(
    "scope",
    [
        Scope(connector_instance_ids=("bbc",)),
        Scope(connector_instance_ids=("bbc",), streams=("sport", "tech"), fields=("headline",)),
        Scope(streams=("messages", "conversations")),
        Scope(record_keys=("sport/001", "tech/003", "business/002")),
    ],
)
def test_exact_paths_match_numpy_brute_force(corpus_db, version_key, scope):
    db = corpus_db
    version = get_version(db, version_key)
    searcher = Searcher(db)
    query = searcher.semantic.query_vector(version, "football results and transfer news")
    result = searcher.semantic.nearest_hits(version, query, scope, 10)
    hits = result.hits
    assert all(plan == "exact" for plan in result.plans.values())

    rows, matrix = _stored(db, version, scope)
    distances = _cosine_distances(matrix, query)
    # One hit per record: each record's nearest chunk, records in exact distance order.
    order, seen = [], set()
    for i in sorted(range(len(rows)), key=lambda i: (distances[i], rows[i][4], rows[i][0])):
        if rows[i][1:3] + (rows[i][4],) not in seen:
            seen.add(rows[i][1:3] + (rows[i][4],))
            order.append(i)
    order = order[:10]
    assert len(hits) == min(10, len(seen))
    assert len({hit.record for hit in hits}) == len(hits)
    np.testing.assert_allclose([hit.distance for hit in hits], [distances[i] for i in order], atol=1e-5)
    # Same ids in the same order; chunks whose distances differ by less than float32 rounding may
    # swap places, since pgvector computes in single precision and numpy in double.
    for hit, i in zip(hits, order):
        if hit.chunk_id != rows[i][0]:
            tied = {rows[j][0] for j in range(len(rows)) if abs(distances[j] - distances[i]) < 1e-6}
            assert hit.chunk_id in tied, (hit.chunk_id, rows[i][0])


SIZES = {  # 50,000 vectors over five sources of skewed sizes
    ("tiny", "s"): 50,        # 0.1%
    ("small", "s"): 500,      # 1%
    ("medium", "s"): 5_000,   # 10%
    ("large", "s"): 25_000,   # 50%
    ("rest", "s"): 19_450,
}


@pytest.fixture(scope="module")
def synthetic_db(server_url):
    name = f"m_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _database_url(server_url, name)
    db = open_database(url)
    version = lifecycle.register_version(db, "synthetic-96", "hashing-96", 96)
    loaded, centers = load_sources(db, version, SIZES)
    parameters = indexes.HnswParameters(m=16, ef_construction=64)
    indexes.build_hnsw(db, version, parameters)
    # "medium" (10%) is a hot source with a partial graph of its own.
    sync_partial_indexes(db, version, HotSourceBand(min_rows=1_000, max_share=0.10, max_sources=8), parameters)
    yield db, version, loaded, centers
    from semindex import database as database_module

    database_module._open_databases.pop(url).close()
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize(
    "instances, expected_plans",
    [
        (("tiny",), {"exact"}),
        (("small",), {"exact"}),
        (("medium",), {"partial"}),
        (("large",), {"ann"}),
        # the hot source joins the walk of the version's graph the large ones share
        (("tiny", "small", "medium", "large", "rest"), {"exact", "ann"}),
        ((), {"global_ann"}),
    ],
)
def test_ann_paths_return_exactly_k_with_high_recall_at_every_selectivity(synthetic_db, instances, expected_plans):
    db, version, loaded, centers = synthetic_db
    searcher = Searcher(db, planner=PlannerSettings(exact_threshold=1_000))
    rng = np.random.default_rng(11)
    in_scope = [key for key in loaded if not instances or key[0] in instances]
    matrix = np.concatenate([loaded[key][1] for key in in_scope]).astype(np.float64)
    recalls, plans = [], set()
    for query in clustered_vectors(rng, 25, version.dimensions, centers):
        result = searcher.semantic.nearest_hits(version, query, Scope(connector_instance_ids=instances), 10)
        hits = result.hits
        plans |= set(result.plans.values())
        assert len(hits) == 10
        distances = [hit.distance for hit in hits]
        assert distances == sorted(distances)
        assert all(not instances or hit.connector_instance_id in instances for hit in hits)
        exact = np.sort(_cosine_distances(matrix, query))[:10]
        recalls.append(sum(d <= exact[-1] + 1e-6 for d in distances) / 10)
    assert plans == expected_plans
    assert np.mean(recalls) >= 0.95, f"recall@10 {np.mean(recalls):.3f} for scope {instances}"


def test_a_selective_filter_on_the_global_graph_never_returns_short(synthetic_db):
    db, version, loaded, centers = synthetic_db
    # Force the filtered global-graph path onto the 1% source: the planner must widen, then go
    # exact, rather than return fewer than k.
    searcher = Searcher(db, planner=PlannerSettings(exact_threshold=10, min_ann_share=0.0, candidate_window=40, graph_window=40, max_ef_search=40))
    query = clustered_vectors(np.random.default_rng(3), 1, version.dimensions, centers)[0]
    result = searcher.semantic.nearest_hits(version, query, Scope(connector_instance_ids=("small",)), 100)
    assert len(result.hits) == 100
    assert result.plans["small/s"] in {"ann", "ann->exact"}


INSTANCES = ["bbc", "chitchat-main", "chitchat-threads", "nobody", "x'; DROP TABLE semindex.chunks; --"]
STREAMS = ["business", "entertainment", "politics", "sport", "tech", "messages", "conversations", "$$"]
FIELDS = ["headline", "body", "text", "sender", "title", "transcript"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    instances=st.lists(st.sampled_from(INSTANCES), max_size=3, unique=True),
    streams=st.lists(st.sampled_from(STREAMS), max_size=3, unique=True),
    fields=st.lists(st.sampled_from(FIELDS), max_size=2, unique=True),
    record_keys=st.lists(st.sampled_from(["sport/001", "tech/002", "politics/003", "x' OR '1'='1"]), max_size=2, unique=True),
    mode=st.sampled_from(["lexical", "semantic", "hybrid"]),
    query=st.sampled_from(["the", "match", "election government", "thanks", "\"world cup\"", "' OR 1=1 --"]),
)
def test_no_hit_ever_falls_outside_its_scope(corpus_db, instances, streams, fields, record_keys, mode, query):
    scope = Scope(tuple(instances), tuple(streams), tuple(fields), tuple(record_keys))
    response = Searcher(corpus_db).search(SearchRequest(query, mode=mode, k=20, scope=scope, version_key="hash-64"))
    for hit in response.hits:
        assert not instances or hit.connector_instance_id in instances
        assert not streams or hit.stream in streams
        assert not fields or hit.field in fields
        assert not record_keys or hit.record_key in record_keys
    assert len({hit.record for hit in response.hits}) == len(response.hits)  # one hit per record
    if mode == "semantic":  # and never short: k records whenever k records match the scope
        version = get_version(corpus_db, "hash-64")
        matching = len({row[1:3] + (row[4],) for row in _stored(corpus_db, version, scope)[0]})
        assert len(response.hits) == min(20, matching)


def test_lexical_ranking_is_windowed_for_a_very_common_term_and_exact_for_record_keys(corpus_db):
    searcher = Searcher(corpus_db)
    common = searcher.search(SearchRequest("the", mode="lexical", k=10, lexical_window=100,
                                           scope=Scope(connector_instance_ids=("chat-busy", "bbc"))))
    assert len(common.hits) == 10
    assert common.meta.lexical.windowed is True and common.meta.lexical.path == "windowed"
    # Decided for the scope: every source with a match of "the" shares the window's 100 candidates.
    windowed = common.meta.lexical.windowed_sources
    assert "chat-busy/messages" in windowed and all(name.split("/")[0] in ("chat-busy", "bbc") for name in windowed)
    assert common.meta.lexical.matched < 100 + len(windowed)  # each ranks ceil(100 / sources)
    assert common.meta.lexical.ranking == "truncated" and common.meta.lexical.matched_exact is False
    assert all(hit.ranks["lexical"] == rank for rank, hit in enumerate(common.hits, start=1))
    assert all("<mark>" in hit.snippet.lower() for hit in common.hits)

    exact = searcher.search(SearchRequest("the", mode="lexical", k=10, scope=Scope(record_keys=("sport/001",))))
    assert exact.meta.lexical == LexicalMeta(windowed=False, windowed_sources=[], candidate_window=None, path="exact",
                                             ranking="exact", matched=exact.meta.lexical.matched, matched_exact=True,
                                             matched_records=1, sources_searched=8)
    assert exact.meta.lexical.matched >= 1  # sport/001's fields holding "the"
    assert {hit.record_key for hit in exact.hits} == {"sport/001"}


def test_hybrid_fuses_by_reciprocal_rank_and_deduplicates_records(corpus_db):
    response = Searcher(corpus_db).search(SearchRequest("football match", mode="hybrid", k=10, version_key="hash-64",
                                                        fusion="rrf", lexical_weight=1.0, semantic_weight=1.0))
    records = [(h.connector_instance_id, h.stream, h.record_key) for h in response.hits]
    assert len(records) == len(set(records)) == 10
    fused = [hit.scores["fused"] for hit in response.hits]
    assert fused == sorted(fused, reverse=True)
    for hit in response.hits:
        expected = sum(1.0 / (60 + hit.ranks[mode]) for mode in ("lexical", "semantic") if mode in hit.ranks)
        assert hit.scores["fused"] == pytest.approx(expected)
    interleaved = Searcher(corpus_db).search(SearchRequest("football match", k=10, fusion="interleave", version_key="hash-64"))
    assert len(interleaved.hits) == 10


def test_hybrid_hydrates_only_its_fused_page_and_every_hit_is_whole(corpus_db, monkeypatch):
    # Both sides rank MAX_K deep; only the page (and a few spare hits) read their chunks.
    from semindex.search import semantic as semantic_module

    asked: list[int] = []
    real = semantic_module.chunk_details
    monkeypatch.setattr(semantic_module, "chunk_details", lambda db, ids: asked.extend(ids) or real(db, ids))
    searcher = Searcher(corpus_db)
    hybrid = searcher.search(SearchRequest("football match", mode="hybrid", k=10, version_key="hash-64"))
    assert len(hybrid.hits) == 10 and 0 < len(asked) <= 10 + 10
    semantic = searcher.search(SearchRequest("football match", mode="semantic", k=10, version_key="hash-64"))
    by_chunk = {hit.chunk_id: hit for hit in semantic.hits}
    for hit in hybrid.hits:
        assert hit.hydrated and hit.connector_id and hit.snippet and hit.chunk_id
        if "lexical" not in hit.ranks:  # a semantic-only hit: placed exactly as semantic search places it
            twin = by_chunk.get(hit.chunk_id)
            if twin is not None:
                assert (hit.connector_id, hit.chunk_no, hit.snippet, hit.updated_at) == (
                    twin.connector_id, twin.chunk_no, twin.snippet, twin.updated_at)


def test_twenty_concurrent_identical_queries_cause_one_encode(corpus_db, monkeypatch):
    import semindex.search.semantic as search_module

    calls = []
    real = search_module.load_encoder("hashing-64")
    gate = threading.Event()

    class CountingEncoder:
        name = real.name

        def encode(self, texts):
            calls.append(list(texts))
            gate.wait(timeout=5)  # hold the first encode so the others pile up behind it
            return real.encode(texts)

    monkeypatch.setattr(search_module, "load_encoder", lambda name: CountingEncoder())
    searcher = Searcher(corpus_db)
    entered = threading.Semaphore(0)
    real_get = searcher.cache.get

    def counting_get(*args, **kwargs):
        entered.release()
        return real_get(*args, **kwargs)

    searcher.cache.get = counting_get
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(
            searcher.search(SearchRequest("budget deficit", mode="semantic", k=5, version_key="hash-64"))))
        for _ in range(20)
    ]
    for thread in threads:
        thread.start()
    # Release the first encode only once all 20 are inside the cache: none of them can have found a
    # finished entry, so one encode means they waited on the one in flight.
    for _ in range(20):
        assert entered.acquire(timeout=30)
    gate.set()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 20 and calls == [["budget deficit"]]
    assert len({tuple(hit.chunk_id for hit in r.hits) for r in results}) == 1


def test_the_cache_is_an_lru_with_a_ttl():
    now = [0.0]
    cache = QueryVectorCache(max_entries=2, ttl_seconds=300, clock=lambda: now[0])
    computed = []
    compute = lambda text: (lambda: computed.append(text) or np.array([len(text)]))  # noqa: E731
    for text in ("a", "b", "a", "c", "b"):
        cache.get("v", text, compute(text))
    assert computed == ["a", "b", "c", "b"]  # "b" was evicted by "c" ("a" was used more recently)
    now[0] = 301
    cache.get("v", "b", compute("b"))
    assert computed[-1] == "b" and len(computed) == 5
    cache.clear_if_active_version_changed("v2")
    assert len(cache) == 0


def test_the_fan_out_bound_holds(corpus_db):
    fanout = SearchFanOut(2)
    searcher = Searcher(corpus_db, fanout=fanout)
    response = searcher.search(SearchRequest("news", mode="hybrid", k=20, version_key="hash-64",
                                             scope=Scope(connector_instance_ids=("bbc", "chitchat-main", "chitchat-threads"))))
    assert len(response.meta.semantic_plans) == 7
    assert 1 <= fanout.peak_in_flight <= 2


def test_overscan_adapts_to_the_page():
    assert [semantic_overscan(k) for k in (1, 10, 25, 50, 80, 100)] == [25, 25, 38, 75, 100, 100]


@pytest.mark.parametrize(
    "request_kwargs, message",
    [
        ({"k": 0}, "k=0 must be between 1 and 100"),
        ({"k": 101}, "k=101 must be between 1 and 100"),
        ({"mode": "fuzzy"}, "mode 'fuzzy' is not one of"),
        ({"lexical_window": 50}, "lexical window 50 must be between 100 and 10000"),
    ],
)
def test_bad_requests_name_the_value(corpus_db, request_kwargs, message):
    with pytest.raises(ValueError, match=message):
        Searcher(corpus_db).search(SearchRequest("q", **request_kwargs))


def test_the_exact_path_never_walks_an_hnsw_graph(synthetic_db):
    # PostgreSQL will happily serve "ORDER BY distance, record_key" with an HNSW scan plus an
    # incremental sort, which under-returns under a filter; the exact path must not allow it.
    from psycopg import sql as psycopg_sql

    from semindex.sql_files import statement

    db, version, loaded, centers = synthetic_db
    query = clustered_vectors(np.random.default_rng(5), 1, version.dimensions, centers)[0]
    exact = statement("search", "semantic_exact", vectors=version.vectors_table, operator=psycopg_sql.SQL("<=>"))
    for instance in ("small", "medium", "large"):
        with db.connection() as conn:
            plan = "\n".join(row[0] for row in conn.execute(
                psycopg_sql.SQL("EXPLAIN ") + exact,
                {"query": query, "instance": instance, "stream": "s", **Scope().sql_params(), "limit": 25},
            ))
        assert "hnsw" not in plan.lower(), plan


def test_unscoped_lexical_search_is_one_windowed_query_over_every_source(corpus_db):
    response = Searcher(corpus_db).search(SearchRequest("the", mode="lexical", k=30, lexical_window=100))
    assert response.meta.lexical.windowed_sources == ["*"]
    assert len(response.hits) == 30
    scores = [hit.scores["lexical"] for hit in response.hits]
    assert scores == sorted(scores, reverse=True)
    assert all("<mark>" in hit.snippet.lower() for hit in response.hits)
