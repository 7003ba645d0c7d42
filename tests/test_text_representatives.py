"""A version's HNSW graph holds one element per distinct text (sql/schema.sql: represent_texts).

Real sources repeat short texts thousands of times; as thousands of identical graph elements they
form islands a greedy walk cannot leave (the 1M-row benchmark lost whole queries to them). Pinned
here, against a real PostgreSQL: the backfill marks exactly one row per text, deletes hand the role
over, an older table and its graph over every row are migrated, the walks use the graph and expand
each text to its rows, and answers over heavily repeated texts match the exact ones.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from psycopg import sql

from semindex import chunks, embeddings, indexes, lifecycle, raw_records, retained_size
from semindex.chunking import ChunkingParameters
from semindex.relevance_metrics import distance_recall
from semindex.search import Scope, Searcher
from semindex.search.planner import PlannerSettings
from semindex.sql_files import statement
from semindex.vector_column import vector_column_stage
from tests.conftest import scratch_database, write_jsonl

# Chat is mostly a few short texts said again and again; the notes are all different.
REPEATED = ["ok", "lol", "Hi\nYo", "OH", "thanks a lot", "see you tomorrow"]
PARAMETERS = indexes.HnswParameters(m=16, ef_construction=64)
# Small thresholds so these few thousand rows take the graph-walk plans.
PLANNER = PlannerSettings(exact_threshold=100, min_ann_share=0.05)


def _note(n: int) -> str:
    """A text of its own: six words of 400, drawn by its number."""
    picks = np.random.default_rng(n).integers(0, 400, size=6)
    return " ".join(f"word{pick}" for pick in picks)


def _records() -> list[dict]:
    records = []
    for n in range(3000):
        records.append({"connector_id": "chat", "connector_instance_id": "chat-1", "stream": "messages",
                        "record_key": f"m{n:05d}", "updated_at": "2024-01-01T00:00:00Z",
                        "fields": {"text": REPEATED[n % len(REPEATED)] if n % 10 else _note(n)}})
    for n in range(1500):
        records.append({"connector_id": "notes", "connector_instance_id": "notes-1", "stream": "notes",
                        "record_key": f"n{n:05d}", "updated_at": "2024-01-01T00:00:00Z",
                        "fields": {"text": _note(10_000 + n)}})
    return records


def _table(version) -> sql.Composable:
    return sql.Identifier(*version.vectors_table.split("."))


def _representation(db, version) -> tuple[int, int, int]:
    """(distinct texts, representing rows, texts with other than one representing row)."""
    with db.connection() as conn:
        return conn.execute(sql.SQL(
            "SELECT count(*), coalesce(sum(marks), 0), count(*) FILTER (WHERE marks <> 1) FROM ("
            " SELECT count(*) FILTER (WHERE represents_text) AS marks FROM {} GROUP BY content_sha256) AS t"
        ).format(_table(version))).fetchone()


@pytest.fixture(scope="module")
def repeated_db(server_url, tmp_path_factory):
    with scratch_database(server_url, "represent") as (_, db):
        path = write_jsonl(tmp_path_factory.mktemp("represent") / "records.jsonl", _records())
        raw_records.ingest_file(db, path)
        chunks.sync_chunks(db, ChunkingParameters())
        version = lifecycle.register_version(db, "islands", "hashing-64", 64)
        embeddings.backfill(db, version)
        vector_column_stage(db, version.version_key)  # the pipeline's next stage: planner statistics
        indexes.build_hnsw(db, version, PARAMETERS)
        retained_size.refresh_projection(db)  # the planner's per-source estimates
        yield db, version


def test_the_backfill_marks_one_row_per_distinct_text(repeated_db):
    db, version = repeated_db
    distinct, marked, wrong = _representation(db, version)
    assert (distinct, marked, wrong) == (distinct, distinct, 0)
    # 6 repeated texts and 300 + 1,500 notes: the graph has 1,806 elements for 4,500 rows.
    assert distinct == len(REPEATED) + 300 + 1500
    definition = indexes.index_definition(db, version.hnsw_index_name)
    assert definition.endswith("WHERE represents_text"), definition


def test_the_walks_use_the_graph_and_expand_each_text_to_its_rows(repeated_db):
    db, version = repeated_db
    query = np.ones(version.dimensions) / np.sqrt(version.dimensions)
    scope = Scope().sql_params()
    for name, params in (("semantic_global_ann", {}),
                         ("semantic_ann_group", {**scope, "instances": ["chat-1"], "streams": ["messages"]})):
        query_sql = statement("search", name, vectors=version.vectors_table, operator=version.metric.sql_operator)
        with db.connection() as conn:
            conn.execute(statement("search", "ann_settings"), ("40", "20000"))
            plan = "\n".join(row[0] for row in conn.execute(sql.SQL("EXPLAIN ") + query_sql,
                                                            {**params, "query": query, "limit": 25}))
        assert f"Index Scan using {version.hnsw_index_name}" in plan, plan
        assert f"{version.table_name}_content" in plan, plan


def test_answers_over_repeated_texts_match_exact_ones(repeated_db):
    db, version = repeated_db
    with db.connection() as conn:
        rows = conn.execute(sql.SQL("SELECT connector_instance_id, field, embedding FROM {}").format(
            _table(version))).fetchall()
    matrix = np.array([row[2].to_numpy() for row in rows], dtype=np.float64)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    in_chat = np.array([row[0] == "chat-1" for row in rows])
    searcher = Searcher(db, planner=PLANNER)
    rng = np.random.default_rng(3)
    recalls = []
    for row_no in rng.choice(len(rows), size=40, replace=False):
        query = matrix[row_no] + 0.3 * rng.normal(size=version.dimensions)
        distances = 1.0 - matrix @ (query / np.linalg.norm(query))
        for scope, keep in ((Scope(), np.ones(len(rows), bool)), (Scope(connector_instance_ids=("chat-1",)), in_chat)):
            result = searcher.semantic.nearest_hits(version, query, scope, 10, chunks=True)
            assert len(result.hits) == 10
            assert set(result.plans.values()) <= {"global_ann", "ann"}, result.plans
            exact = np.sort(distances[keep])[:10]
            recalls.append(distance_recall([hit.scores["distance"] for hit in result.hits], list(exact), 10))
    # A walk caught in an island of one repeated text scores 0 on its query (a graph over every row
    # did, on one of these 40: min 0.0, mean 0.955); a graph walk may still miss a neighbour now and then.
    assert min(recalls) >= 0.8 and sum(recalls) / len(recalls) >= 0.97, recalls


def test_deleting_a_representing_row_hands_its_text_to_a_remaining_row(repeated_db):
    db, version = repeated_db
    table = _table(version)
    with db.connection() as conn:
        text_hash, first = conn.execute(sql.SQL(
            "SELECT content_sha256, chunk_id FROM {} WHERE represents_text AND content_sha256 IN "
            "(SELECT content_sha256 FROM {} GROUP BY 1 HAVING count(*) > 100) LIMIT 1").format(table, table)).fetchone()
        with conn.transaction(force_rollback=True):
            # A chunk deleted (its vector goes by cascade): the next row of its text takes over.
            conn.execute("DELETE FROM semindex.chunks WHERE chunk_id = %s", (first,))
            heirs = conn.execute(sql.SQL("SELECT chunk_id FROM {} WHERE content_sha256 = %s AND represents_text").format(
                table), (text_hash,)).fetchall()
            successor = conn.execute(sql.SQL("SELECT min(chunk_id) FROM {} WHERE content_sha256 = %s").format(table),
                                     (text_hash,)).fetchone()[0]
            assert heirs == [(successor,)]
            # Every row of the text deleted in one statement: no row is left to represent it.
            conn.execute(sql.SQL("DELETE FROM {} WHERE content_sha256 = %s").format(table), (text_hash,))
            assert conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE content_sha256 = %s").format(table),
                                (text_hash,)).fetchone()[0] == 0


def test_a_table_and_graph_made_before_representatives_are_migrated(server_url, tmp_path):
    with scratch_database(server_url, "represent_old") as (_, db):
        raw_records.ingest_file(db, write_jsonl(tmp_path / "records.jsonl", _records()[::5]))
        chunks.sync_chunks(db, ChunkingParameters())
        version = lifecycle.register_version(db, "older", "hashing-64", 64)
        embeddings.backfill(db, version)
        table = _table(version)
        with db.connection() as conn:
            # What an older semindex left: no column, no trigger, a graph over every row.
            conn.execute(sql.SQL("DROP TRIGGER semindex_hand_over_texts ON {}").format(table))
            conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN represents_text").format(table))
            conn.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_cosine_ops)").format(
                sql.Identifier(version.hnsw_index_name), table))
        build = indexes.build_hnsw(db, version, PARAMETERS)
        assert build.action == "built"
        assert indexes.index_definition(db, version.hnsw_index_name).endswith("WHERE represents_text")
        distinct, marked, wrong = _representation(db, version)
        assert marked == distinct and wrong == 0
        # The migration runs once: a second build finds everything in place.
        assert indexes.build_hnsw(db, version, PARAMETERS).action == "exists"
        assert list(itertools.islice(_representation(db, version), 2)) == [distinct, distinct]
