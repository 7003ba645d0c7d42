"""The planner's choices the 1M-row tuning relies on (bench/search_latency.py), pinned by outcome and
by EXPLAIN: a scope of record keys or of fields alone is planned as a whole, not source by source, and
its exact statement reads only the rows it names through an index."""

from __future__ import annotations

import numpy as np
import pytest
from psycopg import sql

from semindex import indexes, lifecycle
from semindex.partial_indexes import (
    HotFieldBand,
    HotSourceBand,
    field_index_name,
    managed_partial_indexes,
    sync_partial_indexes,
)
from semindex.relevance_metrics import distance_recall
from semindex.search import Scope, Searcher
from semindex.search.planner import PlannerSettings
from semindex.search.sources import field_scope
from semindex.sql_files import statement
from tests.conftest import scratch_database
from tests.synthetic_vectors import load_sources

SIZES = {("a", "s"): 6_000, ("b", "s"): 3_000, ("c", "s"): 1_000}
# exact_threshold 1,000: the 200 quote rows are "few", the 4,000 title rows are not.
PLANNER = PlannerSettings(exact_threshold=1_000)
PARAMETERS = indexes.HnswParameters(m=16, ef_construction=64)


@pytest.fixture(scope="module")
def fielded_db(server_url):
    with scratch_database(server_url, "planner") as (_, db):
        version = lifecycle.register_version(db, "planner-96", "hashing-96", 96)
        loaded, _ = load_sources(db, version, SIZES)
        with db.connection() as conn:
            # 2% of the rows are quotes, 40% titles, spread over every source (chunks and vectors alike).
            for table in ("semindex.chunks", version.vectors_table):
                conn.execute(sql.SQL("UPDATE {} SET field = CASE WHEN chunk_id % 50 = 0 THEN 'quote' "
                                     "WHEN chunk_id % 5 IN (1, 2) THEN 'title' ELSE 'text' END").format(
                    sql.Identifier(*table.split("."))))
        with db.autocommit_connection() as conn:
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(*version.vectors_table.split("."))))
        indexes.build_hnsw(db, version, PARAMETERS)
        with db.connection() as conn:
            rows = conn.execute(sql.SQL("SELECT record_key, field, embedding FROM {}").format(
                sql.Identifier(*version.vectors_table.split(".")))).fetchall()
        yield db, version, rows


def _explain(db, version, scope: Scope, query) -> str:
    exact = statement("search", "semantic_exact_all_records", vectors=version.vectors_table,
                      operator=version.metric.sql_operator)
    with db.connection() as conn:
        return "\n".join(row[0] for row in conn.execute(
            sql.SQL("EXPLAIN ") + exact, {"query": query, **scope.sql_params(), "limit": 25}))


def _nearest(rows, query, keep) -> list[float]:
    matrix = np.array([r[2].to_numpy() for r in rows if keep(r)], dtype=np.float64)
    distances = 1.0 - (matrix @ query) / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    return sorted(distances)[:10]


def test_a_scope_of_few_field_rows_is_one_exact_statement_through_the_field_index(fielded_db):
    db, version, rows = fielded_db
    query = rows[7][2].to_numpy().astype(np.float64)
    result = Searcher(db, planner=PLANNER).semantic.nearest_hits(version, query, Scope(fields=("quote",)), 10)
    assert result.plans == {"*": "exact"}
    assert len(result.hits) == 10 and {hit.matched_fields[0] for hit in result.hits} == {"quote"}
    exact = _nearest(rows, query, lambda r: r[1] == "quote")
    assert distance_recall([hit.distance for hit in result.hits], exact, 10) == 1.0
    plan = _explain(db, version, Scope(fields=("quote",)), query)
    assert f"{version.table_name}_field" in plan and "Seq Scan" not in plan, plan


def test_a_scope_of_many_field_rows_is_one_filtered_walk_of_the_graph(fielded_db):
    db, version, rows = fielded_db
    query = rows[11][2].to_numpy().astype(np.float64)
    result = Searcher(db, planner=PLANNER).semantic.nearest_hits(version, query, Scope(fields=("title",)), 10)
    # One plan for every source: the walk is as selective as the field is overall (40%).
    assert set(result.plans) == {"a/s", "b/s", "c/s"} and set(result.plans.values()) == {"ann"}
    assert len(result.hits) == 10 and {hit.matched_fields[0] for hit in result.hits} == {"title"}
    exact = _nearest(rows, query, lambda r: r[1] == "title")
    assert distance_recall([hit.distance for hit in result.hits], exact, 10) >= 0.9


def test_a_scope_of_record_keys_alone_is_one_exact_statement_through_the_key_index(fielded_db):
    db, version, rows = fielded_db
    keys = tuple(sorted({r[0] for r in rows[::400]}))
    query = rows[3][2].to_numpy().astype(np.float64)
    scope = Scope(record_keys=keys)
    result = Searcher(db, planner=PLANNER).semantic.nearest_hits(version, query, scope, 10)
    assert result.plans == {"*": "exact"}
    assert len(result.hits) == 10 and {hit.record_key for hit in result.hits} <= set(keys)
    exact = _nearest(rows, query, lambda r: r[0] in set(keys))
    assert distance_recall([hit.distance for hit in result.hits], exact, 10) == 1.0
    plan = _explain(db, version, scope, query)
    # Through an index of the keys: the keys' own, or (few sources, as here) the scope index skipping
    # over the sources it leads with; at 1M rows and 24 sources the planner takes the keys' own.
    assert ("_record_key" in plan or "_scope" in plan) and "Seq Scan" not in plan, plan


def test_field_estimates_come_from_the_tables_statistics(fielded_db):
    db, version, rows = fielded_db
    total = len(rows)
    assert field_scope(db, version, ("quote",), total).rows == pytest.approx(total * 0.02, rel=0.3)
    assert field_scope(db, version, ("title", "quote"), total).rows == pytest.approx(total * 0.42, rel=0.15)
    # A field the statistics have never seen is estimated from what the common ones leave: none here.
    assert field_scope(db, version, ("nonexistent",), total).rows <= total * 0.01


def test_a_scope_of_one_hot_field_walks_the_fields_own_graph(fielded_db):
    """A hot field (in the field band) gets a partial graph; a scope of that field alone walks it
    (EXPLAIN names it), returns k hits of the field at full recall, and goes back to the exact or
    filtered plan once the field leaves the band."""
    db, version, rows = fielded_db
    searcher = Searcher(db, planner=PLANNER)
    band = HotFieldBand(min_rows=100, max_share=0.5, max_fields=4)
    report = sync_partial_indexes(db, version, HotSourceBand(max_sources=0), PARAMETERS, band)
    try:
        # quote 2% and title 40% are in the band; text (58%) is above its share.
        assert {member["field"] for member in report.members} == {"quote", "title"}
        quote_graph = field_index_name(version, "quote")
        assert quote_graph in managed_partial_indexes(db, version)
        assert field_scope(db, version, ("quote",), len(rows)).partial_index == quote_graph
        assert field_scope(db, version, ("quote", "title"), len(rows)).partial_index is None
        for name, offset in (("quote", 7), ("title", 11)):
            recalls = []
            for query_row in rows[offset::997][:8]:
                query = query_row[2].to_numpy().astype(np.float64)
                result = searcher.semantic.nearest_hits(version, query, Scope(fields=(name,)), 10)
                assert result.plans == {"*": "partial"}
                assert len(result.hits) == 10 and {hit.matched_fields[0] for hit in result.hits} == {name}
                exact = _nearest(rows, query, lambda r, name=name: r[1] == name)
                recalls.append(distance_recall([hit.distance for hit in result.hits], exact, 10))
            assert np.mean(recalls) >= 0.95, (name, recalls)
        walk = statement("search", "semantic_ann_field", vectors=version.vectors_table,
                         operator=version.metric.sql_operator)
        with db.connection() as conn:
            conn.execute(statement("search", "ann_settings"), ("200", "20000"))
            plan = "\n".join(row[0] for row in conn.execute(sql.SQL("EXPLAIN ") + walk, {
                "query": query, **Scope(fields=("quote",)).sql_params(), "field": "quote", "limit": 25}))
        assert quote_graph in plan, plan
        # Two fields have no graph of their own: the statistics decide, as before.
        result = searcher.semantic.nearest_hits(version, query, Scope(fields=("quote", "title")), 10)
        assert set(result.plans.values()) == {"ann"}
    finally:
        dropped = sync_partial_indexes(db, version, HotSourceBand(max_sources=0), PARAMETERS,
                                       HotFieldBand(max_fields=0))
    assert sorted(dropped.dropped) == sorted(member["index"] for member in report.members)
    assert managed_partial_indexes(db, version) == []
    result = searcher.semantic.nearest_hits(version, query, Scope(fields=("quote",)), 10)
    assert result.plans == {"*": "exact"}


def test_a_field_near_the_bands_edge_keeps_its_graph_until_well_past_it(fielded_db):
    """The field band reads sampled statistics: a field with a graph keeps it within 20% of the
    band's edge, where a field without one must reach the edge itself."""
    db, version, _ = fielded_db

    def quote_rows(min_rows: int) -> int | None:
        report = sync_partial_indexes(db, version, HotSourceBand(max_sources=0), PARAMETERS,
                                      HotFieldBand(min_rows=min_rows, max_share=0.1, max_fields=4))
        return next((member["rows"] for member in report.members if member["field"] == "quote"), None)

    try:
        estimate = quote_rows(1)  # quote is 2% of the rows; title (40%) is above the band's share
        assert estimate is not None and estimate > 100
        assert quote_rows(int(estimate * 1.2)) == estimate  # past the edge by less than 20%: kept
        assert quote_rows(int(estimate * 1.3)) is None  # by more: dropped
        assert quote_rows(estimate + 1) is None  # and without a graph, just past the edge is out
        assert quote_rows(estimate) == estimate
    finally:
        sync_partial_indexes(db, version, HotSourceBand(max_sources=0), PARAMETERS, HotFieldBand(max_fields=0))
    assert managed_partial_indexes(db, version) == []


def test_record_keys_over_many_sources_are_read_through_their_own_index(server_url):
    """The scope index leads with the source, so a key scope there is a skip over every source; over
    many sources the planner reads the keys' own index (at 1M rows and 24 sources, 1,000 keys: 7-9 ms
    of index searches through the scope index, 3-5 ms through their own)."""
    with scratch_database(server_url, "keys") as (_, db):
        version = lifecycle.register_version(db, "keys-96", "hashing-96", 96)
        loaded, _ = load_sources(db, version, {(f"s{number:02d}", "s"): 200 for number in range(60)})
        indexes.build_record_key_index(db, version.vectors_table, concurrently=False, maintenance_work_mem="64MB")
        with db.autocommit_connection() as conn:
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(*version.vectors_table.split("."))))
        keys, vectors = loaded[("s07", "s")]
        scope = Scope(record_keys=tuple(keys[:20]))
        plan = _explain(db, version, scope, vectors[3])
        assert f"{version.table_name}_record_key" in plan and "Seq Scan" not in plan, plan
        result = Searcher(db, planner=PLANNER).semantic.nearest_hits(version, vectors[3], scope, 10)
        assert result.plans == {"*": "exact"} and len(result.hits) == 10
        assert {hit.record_key for hit in result.hits} <= set(keys[:20])
