"""semindex.store on a real PostgreSQL: the seed's surface (every method and config key), the filter
language against a Python reference evaluator, filtered search that returns k at every selectivity
with HNSW and IVFFlat, tenant isolation under random interleaved operations, bad input refused
before anything is written, the injection corpus through names, keys and values, and two processes
creating one index."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import uuid

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool

from semindex.database import open_database
from semindex.errors import Conflict, InvalidInput, NotFound
from semindex.store import (
    PgVectorStore,
    StoreConfig,
    SyncPgVectorStore,
    VectorStoreFactory,
)
from semindex.vectors.metric import metric_named
from tests.conftest import scratch_database
from tests.synthetic_vectors import clustered_vectors
from tests.test_sql_injection import PAYLOADS


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture
def url(database_url):
    open_database(database_url)  # bootstrap: the vector extension
    return database_url


def sync_store(url: str, **config) -> SyncPgVectorStore:
    store = SyncPgVectorStore({"connection_string": url, "dimensions": 8, **config})
    store.initialize()
    return store


# ---- the seed's surface --------------------------------------------------------------------------

def test_every_method_of_the_seed(url):
    async def scenario():
        store = VectorStoreFactory().create(backend="pgvector", connection_string=url, dimensions=4)
        assert isinstance(store, PgVectorStore) and store.config.schema == "edubot"
        assert store.config.table_name == "knowledge_embeddings" and store.config.id_type == "uuid"
        async with store:
            vectors = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]] + 0.01
            ids = await store.add_vectors(vectors, metadata=[{"n": n, "tag": ["a", "b"][n % 2]} for n in range(5)])
            assert len(ids) == 5 and all(uuid.UUID(i) for i in ids)
            assert await store.count() == 5 and await store.count({"tag": "a"}) == 3
            got = await store.get_vectors([ids[2], str(uuid.uuid4()), ids[0]])
            assert np.allclose(got[0][0], vectors[2]) and got[0][1] == {"n": 2, "tag": "a"}
            assert got[1] == (None, None) and got[2][1]["n"] == 0
            assert (await store.get_vectors([ids[0]], include_metadata=False))[0][1] is None
            # Upsert: the same id again replaces the row.
            assert await store.add_vectors([vectors[3]], ids=[ids[0]], metadata=[{"n": 99}]) == [ids[0]]
            assert await store.count() == 5 and (await store.get_vectors([ids[0]]))[0][1] == {"n": 99}
            assert await store.update_metadata(ids[:2], [{"x": 1}, {"x": 2}]) == 2
            assert (await store.get_vectors([ids[1]]))[0][1] == {"x": 2}  # replaced, not merged
            assert await store.update_metadata_where({"x": {"$gte": 1}}, {"seen": True}) == 2
            assert (await store.get_vectors([ids[1]]))[0][1] == {"x": 2, "seen": True}  # merged
            assert await store.metadata_fields() == ["n", "seen", "tag", "x"]
            hits = await store.search(vectors[2], k=2)
            assert hits[0][0] == ids[2] and math.isclose(hits[0][1], 1.0, abs_tol=1e-5) and hits[0][2]["n"] == 2
            assert all(meta is None for _, _, meta in await store.search(vectors[2], k=2, include_metadata=False))
            tagged = await store.search(vectors[2], k=5, filter={"tag": "a"})
            assert [h[0] for h in tagged][0] == ids[2] and {h[2]["tag"] for h in tagged} == {"a"} and len(tagged) == 2
            assert await store.delete_vectors([ids[0], str(uuid.uuid4())]) == 1
            assert await store.clear({"tag": "b"}) == 1
            with pytest.raises(InvalidInput, match="all_domains=True"):
                await store.clear()
            assert await store.clear(all_domains=True) == 3 and await store.count() == 0
        assert store._pool is None
    run(scenario())


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "inner_product", "l1"])
def test_scores_follow_the_seed_for_every_metric(url, metric):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(30, 8)).astype(np.float32)
    with SyncPgVectorStore({"connection_string": url, "dimensions": 8, "metric": metric, "table_name": f"m_{metric}"}) as store:
        ids = store.add_vectors(vectors)
        query = rng.normal(size=8).astype(np.float32)
        hits = store.search(query, k=5)
    name = {"euclidean": "l2", "inner_product": "ip"}.get(metric, metric)
    spec = metric_named(name)
    distances = spec.distances(vectors, query)
    order = np.argsort(distances, kind="stable")[:5]
    assert [h[0] for h in hits] == [ids[i] for i in order]
    expected = {"cosine": lambda d: 1 - d, "l2": lambda d: 1 / (1 + d), "ip": lambda d: -d, "l1": lambda d: 1 / (1 + d)}[name]
    assert np.allclose([h[1] for h in hits], [expected(distances[i]) for i in order], atol=1e-4)


def test_every_config_key(url):
    columns = {"id": "product_id", "embedding": "vector_data", "content": "description", "metadata": "attributes",
               "domain_id": "category", "document_id": "source_file", "chunk_index": "segment_num", "created_at": "indexed_at"}
    config = StoreConfig(dimensions=3, connection_string=url, metric="euclidean", schema="shop", table_name="product_embeddings",
                         pool_min_size=1, pool_max_size=3, auto_create_table=True, id_type="text", columns=columns,
                         index_type="hnsw", auto_create_index=True, min_rows_for_index=10, index_params={"m": 8, "ef_construction": 32},
                         domain_id="books")
    with SyncPgVectorStore(config) as store:
        assert store.store._pool.min_size == 1 and store.store._pool.max_size == 3
        store.add_vectors([[1, 0, 0], [0, 1, 0]], ids=["p1", "p2"],
                          metadata=[{"content": "a book", "document_id": "f.pdf", "chunk_index": 3}, {}])
        assert [h[0] for h in store.search([1, 0, 0], k=2)] == ["p1", "p2"]
    with psycopg.connect(url) as conn:
        row = conn.execute('SELECT product_id, category, source_file, segment_num, description, attributes, indexed_at IS NOT NULL '
                           'FROM shop.product_embeddings WHERE product_id = %s', ("p1",)).fetchone()
        assert row == ("p1", "books", "f.pdf", 3, "a book", {"content": "a book", "document_id": "f.pdf", "chunk_index": 3}, True)
        index = conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'shop' AND indexdef LIKE '%hnsw%'").fetchone()[0]
        assert "vector_l2_ops" in index and "m='8'" in index and "ef_construction='32'" in index
    # Without auto_create_table, a missing table is a clear error.
    with pytest.raises(NotFound, match="no column"):
        SyncPgVectorStore({"connection_string": url, "dimensions": 3, "table_name": "missing", "auto_create_table": False}).initialize()


def test_database_url_is_the_default_connection(url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", url)
    with SyncPgVectorStore({"dimensions": 2, "table_name": "from_env"}) as store:
        store.add_vectors([[1, 2]])
        assert store.count() == 1


def test_an_injected_pool_stays_open(url):
    async def scenario():
        pool = AsyncConnectionPool(url, min_size=1, max_size=2, open=False)
        await pool.open()
        store = PgVectorStore.from_components({"dimensions": 2, "table_name": "injected"}, pool=pool)
        await store.initialize()
        await store.add_vectors([[1, 2]])
        await store.close()
        async with pool.connection() as conn:  # still open
            assert (await (await conn.execute("SELECT count(*) FROM edubot.injected")).fetchone())[0] == 1
        await pool.close()
    run(scenario())


def test_ivfflat_is_created_after_enough_rows_and_never_inside_search(url):
    rng = np.random.default_rng(2)
    with SyncPgVectorStore({"connection_string": url, "dimensions": 8, "table_name": "ivf", "index_type": "ivfflat",
                            "auto_create_index": True, "min_rows_for_index": 500}) as store:
        store.add_vectors(rng.normal(size=(300, 8)))
        assert not run_sync_indexes(store)
        store.search(rng.normal(size=8), k=3)  # below the threshold: no index, and search never builds one
        assert not run_sync_indexes(store)
        store.add_vectors(rng.normal(size=(300, 8)))  # 600 rows: built after this write
        indexes = run_sync_indexes(store)
        assert [index["kind"] for index in indexes] == ["ivfflat"]
        result = store.create_index()
        assert result.created is False and result.index_type == "ivfflat"


def run_sync_indexes(store: SyncPgVectorStore) -> list:
    store.store._ann = (0.0, [])
    return store.run(store.store._ann_indexes())


def test_create_index_reports_what_it_did(url):
    rng = np.random.default_rng(3)
    with SyncPgVectorStore({"connection_string": url, "dimensions": 8, "table_name": "explicit"}) as store:
        store.add_vectors(rng.normal(size=(2000, 8)))
        result = store.create_index("ivfflat", {"lists": 20})
        assert (result.index_type, result.created, result.concurrently, result.params) == ("ivfflat", True, True, {"lists": 20})
        again = store.create_index("hnsw")
        assert again.created and again.params == {"m": 16, "ef_construction": 64}
        with pytest.raises(InvalidInput, match="does not apply to hnsw"):
            store.create_index("hnsw", {"lists": 3})


# ---- the filter language against a reference evaluator ---------------------------------------------

_MISSING = object()


def _leaf(metadata: dict, key: str):
    value = metadata
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _kind(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def _same(a, b) -> bool:
    return _kind(a) == _kind(b) and a == b


def _equals(leaf, value) -> bool:
    if isinstance(value, list):
        return any(_equals(leaf, item) for item in value)
    if leaf is _MISSING:
        return False
    return _same(leaf, value) or (isinstance(leaf, list) and any(_same(item, value) for item in leaf))


def reference(metadata: dict, spec: dict) -> bool:
    """What a filter means, in Python (the documented semantics of semindex.store.filters)."""
    for key, condition in spec.items():
        if key == "$and":
            ok = all(reference(metadata, item) for item in condition)
        elif key == "$or":
            ok = any(reference(metadata, item) for item in condition)
        elif key == "$not":
            ok = not reference(metadata, condition)
        else:
            leaf = _leaf(metadata, key)
            if isinstance(condition, dict):
                ok = all(_operator(leaf, op, operand) for op, operand in condition.items())
            else:
                ok = _equals(leaf, condition)
        if not ok:
            return False
    return True


def _operator(leaf, op, operand) -> bool:
    if op == "$eq":
        return _equals(leaf, operand)
    if op == "$ne":
        return not _equals(leaf, operand)
    if op == "$in":
        return _equals(leaf, operand)
    if op == "$nin":
        return not _equals(leaf, operand)
    if op == "$exists":
        return (leaf is not _MISSING) == operand
    if leaf is _MISSING or _kind(leaf) != _kind(operand) or _kind(leaf) not in ("number", "str"):
        return False
    return {"$gt": leaf > operand, "$gte": leaf >= operand, "$lt": leaf < operand, "$lte": leaf <= operand}[op]


KEYS = ["color", "size", "tags", "meta.level", "flag"]
scalars = st.one_of(st.sampled_from(["red", "blue", "Red", "é", ""]), st.integers(-3, 3),
                    st.sampled_from([0.5, -1.25, 2.0]), st.booleans(), st.none())
metadata_values = st.one_of(scalars, st.lists(scalars, max_size=3))


@st.composite
def metadata_dicts(draw):
    meta = {}
    for key in draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=5)):
        value = draw(metadata_values)
        if "." in key:
            head, tail = key.split(".")
            meta.setdefault(head, {})[tail] = value
        else:
            meta[key] = value
    return meta


def leaf_conditions():
    range_operand = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, -1.25]), st.sampled_from(["blue", "red", "m"]))
    ops = st.one_of(
        st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), range_operand),
        st.tuples(st.sampled_from(["$eq", "$ne"]), scalars),
        st.tuples(st.sampled_from(["$in", "$nin"]), st.lists(scalars, max_size=3)),
        st.tuples(st.just("$exists"), st.booleans()),
    )
    return st.one_of(metadata_values, ops.map(lambda pair: {pair[0]: pair[1]}))


filters = st.recursive(
    st.dictionaries(st.sampled_from(KEYS), leaf_conditions(), min_size=1, max_size=2),
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda items: {"$and": items}),
        st.lists(children, min_size=1, max_size=3).map(lambda items: {"$or": items}),
        children.map(lambda item: {"$not": item}),
    ),
    max_leaves=5,
)


@pytest.fixture(scope="module")
def filter_store(server_url):
    with scratch_database(server_url, "store") as (url, _):
        store = SyncPgVectorStore({"connection_string": url, "dimensions": 4, "id_type": "text", "table_name": "filters"})
        store.initialize()
        yield store
        store.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(metadata_dicts(), min_size=1, max_size=25), spec=filters)
def test_the_filter_language_matches_the_reference(filter_store, rows, spec):
    store = filter_store
    store.clear(all_domains=True)
    ids = [f"r{n}" for n in range(len(rows))]
    rng = np.random.default_rng(len(rows))
    store.add_vectors(rng.normal(size=(len(rows), 4)) + 5, ids=ids, metadata=rows)
    expected = {row_id for row_id, meta in zip(ids, rows) if reference(meta, spec)}
    assert store.count(spec) == len(expected), spec
    found = {hit[0] for hit in store.search(np.ones(4), k=len(rows), filter=spec)}
    assert found == expected, (spec, rows)
    assert store.update_metadata_where(spec, {"_touched": True}) == len(expected)
    touched = {row_id for row_id, (_, meta) in zip(ids, store.get_vectors(ids)) if meta.get("_touched") is True}
    assert touched == expected
    assert store.clear(spec) == len(expected)
    assert {row_id for row_id, (vector, _) in zip(ids, store.get_vectors(ids)) if vector is not None} == set(ids) - expected


@pytest.mark.parametrize("spec, message", [
    ({"a": {"$regex": "x"}}, "unknown operator '\\$regex'"),
    ({"$nor": []}, "unknown operator '\\$nor'"),
    ({"a": {"$gt": 1, "b": 2}}, "operators and plain keys are mixed"),
    ({"a": {"$gt": True}}, "compares numbers or strings"),
    ({"a": {"$in": "x"}}, "must be a list"),
    ({"a": {"$exists": "yes"}}, "must be true or false"),
    ({"$or": []}, "non-empty list"),
    ({"a..b": 1}, "empty part"),
    ({"": 1}, "non-empty text"),
    ({"a": float("nan")}, "not a finite number"),
    (["a"], "must be an object"),
])
def test_a_malformed_filter_names_its_fault(filter_store, spec, message):
    with pytest.raises(InvalidInput, match=message):
        filter_store.count(spec)


# ---- filtered search never under-returns -------------------------------------------------------------

SELECTIVITIES = (0.001, 0.01, 0.1, 0.5, 1.0)


@pytest.fixture(scope="module")
def big_store(server_url):
    """50,000 rows of 32-d clustered vectors; `bucket` = row % 1000 selects any share of them."""
    with scratch_database(server_url, "store") as (url, _):
        yield from _big_stores(url)


def _big_stores(url: str):
    rng = np.random.default_rng(11)
    centers = rng.normal(size=(40, 32))
    vectors = clustered_vectors(rng, 50_000, 32, centers)
    ids = [f"v{n}" for n in range(len(vectors))]
    queries = clustered_vectors(rng, 20, 32, centers)
    stores = {}
    for kind, params in (("hnsw", {"m": 16, "ef_construction": 64}), ("ivfflat", {"lists": 50})):
        store = SyncPgVectorStore({"connection_string": url, "dimensions": 32, "id_type": "text", "table_name": f"big_{kind}"})
        store.initialize()
        store.add_vectors(vectors, ids=ids, metadata=[{"bucket": n % 1000} for n in range(len(vectors))])
        assert store.create_index(kind, params).created
        stores[kind] = store
    yield stores, vectors, ids, queries
    for store in stores.values():
        store.close()


@pytest.mark.parametrize("kind", ["hnsw", "ivfflat"])
def test_filtered_search_returns_k_with_high_recall_at_every_selectivity(big_store, kind):
    stores, vectors, ids, queries = big_store
    store = stores[kind]
    metric = metric_named("cosine")
    for share in SELECTIVITIES:
        spec = {"bucket": {"$lt": int(share * 1000)}}
        allowed = np.array([n % 1000 < share * 1000 for n in range(len(vectors))])
        recalls, plans = [], set()
        for query in queries:
            hits = store.search(query, k=10, filter=spec)
            plans.add(store.last_plan.kind)
            assert len(hits) == 10, (kind, share, store.last_plan)
            distances = np.where(allowed, metric.distances(vectors, query), np.inf)
            truth = {ids[i] for i in np.argsort(distances, kind="stable")[:10]}
            recalls.append(len(truth & {h[0] for h in hits}) / 10)
        assert np.mean(recalls) >= 0.95, (kind, share, np.mean(recalls), plans)
        if share >= 0.5:
            assert plans & {kind}, plans  # the index answered (not every query fell back to exact)
        else:
            assert plans == {"exact"}, plans


# ---- tenants ---------------------------------------------------------------------------------------

def test_a_scoped_store_never_touches_another_domain(url):
    shared = {"connection_string": url, "dimensions": 3, "id_type": "text", "table_name": "tenants"}
    with SyncPgVectorStore({**shared, "domain_id": "a"}) as a, SyncPgVectorStore({**shared, "domain_id": "b"}) as b:
        a.add_vectors([[1, 0, 0]], ids=["x"], metadata=[{"k": 1}])
        with pytest.raises(Conflict, match="'a'.*'b'|'b'.*'a'"):
            b.add_vectors([[0, 1, 0]], ids=["x"])  # a colliding id: never moved between tenants
        with pytest.raises(Conflict, match="domain 'a'.*scoped to domain 'b'"):
            b.add_vectors([[0, 1, 0]], ids=["y"], metadata=[{"domain_id": "a"}])
        assert b.count() == 0 and b.get_vectors(["x"]) == [(None, None)]
        assert b.update_metadata(["x"], [{"k": 2}]) == 0 and b.delete_vectors(["x"]) == 0
        assert b.update_metadata_where({"k": 1}, {"z": 1}) == 0 and b.search([1, 0, 0], k=5) == []
        assert b.clear() == 0 and a.count() == 1 and a.get_vectors(["x"])[0][1] == {"k": 1}
    with SyncPgVectorStore(shared) as everyone:
        with pytest.raises(InvalidInput, match="all_domains"):
            everyone.clear()
        assert everyone.count() == 1


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(operations=st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from(["add", "update", "delete", "clear", "where"]),
                                     st.lists(st.sampled_from(["p", "q", "r", "s"]), min_size=1, max_size=3, unique=True),
                                     st.integers(0, 3)), max_size=20))
def test_two_domains_under_random_interleaved_operations(filter_store, operations):
    url = filter_store.config.connection_string
    shared = {"connection_string": url, "dimensions": 4, "id_type": "text", "table_name": f"t_{uuid.uuid4().hex[:8]}"}
    models = {"a": {}, "b": {}}
    with SyncPgVectorStore({**shared, "domain_id": "a"}) as a, SyncPgVectorStore({**shared, "domain_id": "b"}) as b:
        stores = {"a": a, "b": b}
        for domain, operation, keys, value in operations:
            store, model, other = stores[domain], models[domain], models["b" if domain == "a" else "a"]
            ids = [f"{domain}-{key}" if value % 2 else key for key in keys]  # bare keys collide across domains
            if operation == "add":
                if any(i in other for i in ids):
                    with pytest.raises(Conflict):
                        store.add_vectors(np.ones((len(ids), 4)) * (value + 1), ids=ids, metadata=[{"v": value}] * len(ids))
                else:
                    store.add_vectors(np.ones((len(ids), 4)) * (value + 1), ids=ids, metadata=[{"v": value}] * len(ids))
                    model.update(dict.fromkeys(ids, {"v": value}))
            elif operation == "update":
                assert store.update_metadata(ids, [{"v": value}] * len(ids)) == sum(i in model for i in ids)
                model.update({i: {"v": value} for i in ids if i in model})
            elif operation == "delete":
                assert store.delete_vectors(ids) == sum(i in model for i in ids)
                for i in ids:
                    model.pop(i, None)
            elif operation == "clear":
                assert store.clear({"v": value}) == sum(m == {"v": value} for m in model.values())
                for i in [i for i, m in model.items() if m == {"v": value}]:
                    del model[i]
            else:
                assert store.update_metadata_where({"v": value}, {"v": (value + 1) % 4}) == sum(m == {"v": value} for m in model.values())
                model.update({i: {"v": (value + 1) % 4} for i, m in list(model.items()) if m == {"v": value}})
            for name in "ab":
                assert stores[name].count() == len(models[name])
                assert {h[0] for h in stores[name].search(np.ones(4), k=10)} == set(models[name])


# ---- bad input -------------------------------------------------------------------------------------

def test_bad_input_is_refused_before_anything_is_written(url):
    with SyncPgVectorStore({"connection_string": url, "dimensions": 3, "table_name": "bad"}) as store:
        cases = [
            (lambda: store.add_vectors([[1, 2]]), "expected 3 dimensions, got 2"),
            (lambda: store.add_vectors([[1, 2, 3], [1, 2]]), "mixed lengths"),
            (lambda: store.add_vectors([[1, float("nan"), 3]]), "NaN or infinite"),
            (lambda: store.add_vectors([[1, 2, 3], [1, float("inf"), 3]]), "row 1 holds NaN or infinite"),
            (lambda: store.add_vectors([[0, 0, 0]]), "zero vector"),
            (lambda: store.add_vectors([[1, 2, 3]], ids=[str(uuid.uuid4()), str(uuid.uuid4())]), "2 ids for 1 vectors"),
            (lambda: store.add_vectors([[1, 2, 3]], metadata=[{}, {}]), "2 metadata entries for 1 vectors"),
            (lambda: store.add_vectors([[1, 2, 3], [3, 2, 1]], ids=["not-a-uuid", str(uuid.uuid4())]), "'not-a-uuid' is not a UUID"),
            (lambda: store.add_vectors([[1, 2, 3], [3, 2, 1]], metadata=[{}, "x"]), "metadata\\[1\\] must be an object"),
            (lambda: store.update_metadata([str(uuid.uuid4())] * 2, [{}]), "1 metadata entries for 2 ids"),
            (lambda: store.search([1, 2, 3], k=0), "k=0"),
            (lambda: store.search([1, 2, 3], k=10_001), "k=10001"),
            (lambda: store.search([1, 2], k=3), "expected 3 dimensions, got 2"),
        ]
        for call, message in cases:
            with pytest.raises(InvalidInput, match=message):
                call()
        assert store.count() == 0  # nothing from any failed call
        id_ = str(uuid.uuid4())
        with pytest.raises(InvalidInput, match="appears twice"):
            store.add_vectors([[1, 2, 3], [3, 2, 1]], ids=[id_, id_])
        assert store.count() == 0
    for config, message in (({}, "needs `dimensions`"), ({"dimensions": 0}, "from 1 to 16,000"),
                            ({"dimensions": 20_000}, "from 1 to 16,000"), ({"dimensions": 3, "metric": "dot"}, "metric 'dot'"),
                            ({"dimensions": 3, "id_type": "int"}, "id_type 'int'"), ({"dimensions": 3, "nope": 1}, "unknown store config"),
                            ({"dimensions": 3, "table_name": "a%sb"}, "contains '%'"), ({"dimensions": 3, "index_params": {"m": "16"}}, "whole number"),
                            ({"dimensions": 3, "columns": {"vector": "v"}}, "unknown column mapping")):
        with pytest.raises(InvalidInput, match=message):
            PgVectorStore({"connection_string": url, **config})
    with SyncPgVectorStore({"connection_string": url, "dimensions": 3, "table_name": "dims"}) as store:
        store.add_vectors([[1, 2, 3]])
    with pytest.raises(Conflict, match="vector\\(3\\).*not vector\\(4\\)"):
        SyncPgVectorStore({"connection_string": url, "dimensions": 4, "table_name": "dims"}).initialize()
    with SyncPgVectorStore({"connection_string": url, "dimensions": 3, "table_name": "l1", "metric": "l1"}) as store:
        with pytest.raises(InvalidInput, match="IVFFlat has no l1"):
            store.create_index("ivfflat")
    with pytest.raises(InvalidInput, match="backend 'chroma'"):
        VectorStoreFactory().create(backend="chroma", dimensions=3)


def test_the_injection_corpus_through_names_keys_and_values(url):
    from tests.test_sql_injection import snapshot

    db = open_database(url)
    before = snapshot(db)
    for number, payload in enumerate(p for p in PAYLOADS if "%" not in p and "\x00" not in p and len(p.encode()) <= 50):
        config = {"connection_string": url, "dimensions": 2, "id_type": "text", "schema": f"s{number}{payload}"[:60],
                  "table_name": payload, "columns": {"metadata": f"m{payload}"[:60], "embedding": f"e{payload}"[:60]}}
        # A dot in a filter key reaches into nested objects, so keys hold the payload without dots.
        key = "k" + payload.replace(".", "_")  # a leading $ would be an operator
        with SyncPgVectorStore(config) as store:
            store.add_vectors([[1, 2], [2, 1]], ids=[payload or "empty", "other"],
                              metadata=[{key: payload, "nested": {key: 1}}, {"k": "other"}])
            assert store.count({key: payload}) == 1
            assert store.count({f"nested.{key}": {"$gte": 1}}) == 1
            assert [h[0] for h in store.search([1, 2], k=5, filter={key: {"$in": [payload]}})] == [payload or "empty"]
            assert store.update_metadata_where({key: payload}, {key: "changed"}) == 1
            assert store.get_vectors([payload or "empty"])[0][1][key] == "changed"
    after = snapshot(db)
    # Only the stores' own schemas and tables were added; nothing else changed.
    assert {name for schema, name, kind in after.relations - before.relations if schema.startswith("s")}
    assert before.relations <= after.relations and before.roles == after.roles
    assert {k: v for k, v in after.tables.items() if k in before.tables} == before.tables


# ---- one index across processes ---------------------------------------------------------------------

def test_two_processes_initialize_and_create_one_index(url):
    script = """
import sys, json
from semindex.store import SyncPgVectorStore
store = SyncPgVectorStore({"connection_string": sys.argv[1], "dimensions": 8, "table_name": "racing", "index_type": "hnsw"})
store.initialize()
result = store.create_index()
print(json.dumps({"created": result.created, "name": result.name}))
store.close()
"""
    with SyncPgVectorStore({"connection_string": url, "dimensions": 8, "table_name": "racing"}) as store:
        store.add_vectors(np.random.default_rng(4).normal(size=(3000, 8)))
    processes = [subprocess.Popen([sys.executable, "-c", script, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    import json

    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sorted(r["created"] for r in results) == [False, True]
    with psycopg.connect(url) as conn:
        count = conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'racing' AND indexdef LIKE '%hnsw%'").fetchone()[0]
    assert count == 1
