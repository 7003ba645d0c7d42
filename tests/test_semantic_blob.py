"""The reference server's semantic_search_blob adopted in place, on the real embedded PostgreSQL:
the JSONB -> pgvector boot migration (uncastable rows by reason, primary-key batches, the one-
transaction swap, the partial HNSW index), SIGKILL at 20 random points, query parity with numpy,
rows of several dimensions, and JSONB mode for a role that may not create the vector extension."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
import pytest
from psycopg import sql

from semindex import semantic_blob, settings
from semindex.indexes import HnswParameters
from semindex.semantic_blob import migration as blob_migration
from semindex.semantic_blob import table as blob_table
from semindex.database import Database, VectorExtensionMissing
from semindex.search import PlannerSettings
from semindex.semantic_blob import inspect_blob_table, migrate, search_blob
from semindex.sql_files import statement

PROJECT = Path(__file__).resolve().parent.parent
WORKER = PROJECT / "tests" / "blob_migration_worker.py"
TABLE = "public.semantic_search_blob"
INSTANCES = ("gmail-ann", "slack-acme", "notes")
FLT_MAX = float(np.finfo(np.float32).max)


def scope_key(stream: str, field_name: str) -> str:
    return json.dumps([stream, field_name], separators=(",", ":"))


SCOPES = (scope_key("messages", "body"), scope_key("messages", "subject"), scope_key("threads", "body"),
          scope_key("docs", "text"))

# Every kind of row the cast refuses, in known counts (a 383-number body makes the others 384 long).
_BODY = ",".join(["0.05"] * 383)
BAD_ROWS = {
    "null_embedding": [None, None],
    "not_an_array": ["null", '{"a": [1, 2]}', '"[1, 2]"', "5"],
    "empty_array": ["[]", "[]"],
    "too_many_dimensions": ["[" + ",".join(["0.001"] * 16_001) + "]"],
    "nan_or_infinity": [f'["NaN",{_BODY}]', f'[{_BODY},"Infinity"]', f'["-inf",{_BODY}]'],
    "null_element": [f"[null,{_BODY}]", f"[{_BODY},null]"],
    "non_numeric_element": [f'["0.5",{_BODY}]', f"[true,{_BODY}]", f"[[0.1],{_BODY}]"],
    "out_of_float4_range": [f"[1e39,{_BODY}]", f"[-1e39,{_BODY}]", f"[1e400,{_BODY}]",
                            f"[340282356779733661637539395458142568448,{_BODY}]"],
}
# Rows at the edges that must survive, with the values pgvector gives them (8 dimensions: a third
# dimension in the table, never queried by cosine, since FLT_MAX squared overflows float4).
_EIGHT = ",".join(["0.5"] * 7)
EDGE_ROWS = {
    "edge-tiny": (f"[1e-400,{_EIGHT}]", [0.0] + [0.5] * 7),
    "edge-flt-max": (f"[3.4028234663852886e38,{_EIGHT}]", [FLT_MAX] + [0.5] * 7),
    "edge-below-overflow": (f"[340282356779733661637539395458142568447,{_EIGHT}]", [FLT_MAX] + [0.5] * 7),
    "edge-negative-zero": (f"[-0,{_EIGHT}]", [0.0] + [0.5] * 7),
}

CREATE_TABLE = """CREATE TABLE {} (
    connector_id text NOT NULL,
    connector_instance_id text NOT NULL,
    scope_key text NOT NULL,
    record_key text NOT NULL,
    embedding jsonb,
    PRIMARY KEY (connector_instance_id, scope_key, record_key)
)"""


@dataclass
class BlobFixture:
    rows: list[tuple]  # (connector_id, instance, scope_key, record_key, embedding text or None), COPY order
    vectors: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)  # castable rows' values
    bad: dict[str, int] = field(default_factory=dict)  # uncastable rows by reason
    _groups: dict = field(default_factory=dict, repr=False)

    def add(self, key: tuple[str, str, str], vector: np.ndarray) -> None:
        self.vectors[key] = vector
        self._groups.clear()

    def _group(self, instance: str, dimensions: int):
        if (instance, dimensions) not in self._groups:
            keys = [key for key, vector in self.vectors.items() if key[0] == instance and len(vector) == dimensions]
            matrix = np.array([self.vectors[key] for key in keys]).reshape(len(keys), dimensions)
            self._groups[(instance, dimensions)] = (
                np.array([key[2] for key in keys], dtype=object), np.array([key[1] for key in keys], dtype=object), matrix)
        return self._groups[(instance, dimensions)]

    def matching(self, instance, dimensions, scope_keys=None, record_keys=None):
        records, scopes, matrix = self._group(instance, dimensions)
        mask = np.ones(len(records), dtype=bool)
        if scope_keys:
            mask &= np.isin(scopes, list(scope_keys))
        if record_keys:
            mask &= np.isin(records, list(record_keys))
        return records[mask], scopes[mask], matrix[mask]

    def brute_force(self, query, k, instance, scope_keys=None, record_keys=None):
        """numpy's answer: [(record_key, scope_key, distance)], ties by record then scope key, NaN as inf."""
        query = np.asarray(query, dtype=np.float64)
        records, scopes, matrix = self.matching(instance, len(query), scope_keys, record_keys)
        with np.errstate(invalid="ignore", divide="ignore"):
            distances = 1.0 - (matrix @ query) / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
        distances = np.where(np.isnan(distances), np.inf, distances)
        hits = [(str(r), str(s), float(d)) for r, s, d in zip(records, scopes, distances)]
        return sorted(hits, key=lambda hit: (hit[2], hit[0], hit[1]))[:k]


def make_fixture(seed: int, *, per_instance_384: int, per_instance_768: int, bad: bool = True,
                 intrinsic_dimensions: int | None = None) -> BlobFixture:
    """Unit-norm random vectors (7 decimals, as a JSON writer would leave them), several dimensions,
    every uncastable kind and the edge rows, in shuffled order so storage order is not key order.
    With `intrinsic_dimensions`, vectors lie near a subspace of that dimension, as text embeddings
    do (their neighbours are then well defined, which uniform noise in 384 dimensions never has)."""
    rng = np.random.default_rng(seed)
    fixture = BlobFixture(rows=[])
    for instance in INSTANCES:
        for dimensions, count in ((384, per_instance_384), (768, per_instance_768)):
            vectors = rng.standard_normal((count, dimensions))
            if intrinsic_dimensions:
                basis = rng.standard_normal((intrinsic_dimensions, dimensions))
                vectors = rng.standard_normal((count, intrinsic_dimensions)) @ basis + 0.5 * vectors
            vectors = np.round(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), 7)
            scopes = rng.integers(len(SCOPES), size=count)
            for number, (vector, scope_index) in enumerate(zip(vectors, scopes)):
                key = (instance, SCOPES[scope_index], f"rec-{dimensions}-{number:06d}")
                fixture.vectors[key] = vector
                fixture.rows.append(("connector", *key, json.dumps(vector.tolist())))
    # A zero vector: castable, but its cosine distance is NaN (reported as inf, last).
    zero_key = ("notes", SCOPES[3], "rec-384-zero")
    fixture.vectors[zero_key] = np.zeros(384)
    fixture.rows.append(("connector", *zero_key, json.dumps([0] * 384)))
    for name, (text, expected) in EDGE_ROWS.items():
        key = ("notes", SCOPES[0], name)
        fixture.vectors[key] = np.array(expected)
        fixture.rows.append(("connector", *key, text))
    if bad:
        for reason, texts in BAD_ROWS.items():
            fixture.bad[reason] = len(texts)
            for number, text in enumerate(texts):
                # Keys that sort among the good ones, so bad rows land in many different batches.
                instance = INSTANCES[int(rng.integers(len(INSTANCES)))]
                record_key = f"rec-384-{int(rng.integers(max(per_instance_384, 1))):06d}-{reason}-{number}"
                fixture.rows.append(("connector", instance, SCOPES[0], record_key, text))
    order = rng.permutation(len(fixture.rows))
    fixture.rows = [fixture.rows[i] for i in order]
    return fixture


def load_fixture(conn: psycopg.Connection, table: str, fixture: BlobFixture) -> None:
    schema, name = table.split(".")
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL(CREATE_TABLE).format(sql.Identifier(schema, name)))
    with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(schema, name))) as copy:
        for row in fixture.rows:
            copy.write_row(row)
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, name)))


def migrated_vectors(conn: psycopg.Connection, table: str) -> dict[tuple[str, str, str], np.ndarray]:
    schema, name = table.split(".")
    query = sql.SQL("SELECT connector_instance_id, scope_key, record_key, embedding::text FROM {}").format(
        sql.Identifier(schema, name)
    )
    return {(ci, sk, rk): np.array(json.loads(text)) for ci, sk, rk, text in conn.execute(query)}


def assert_values_preserved(fixture: BlobFixture, found: dict) -> None:
    assert set(found) == set(fixture.vectors)
    for key, expected in fixture.vectors.items():
        got = found[key]
        assert got.shape == expected.shape, key
        # float4 storage: within 1e-6 for unit vectors, and relative for the FLT_MAX edge rows.
        assert np.allclose(got, expected, rtol=1e-6, atol=1e-6), key


def assert_same_ranking(hits, expected) -> None:
    assert [(record, scope) for record, scope, _ in hits] == [(record, scope) for record, scope, _ in expected]
    for (_, _, got), (_, _, want) in zip(hits, expected, strict=True):
        assert (got == want == np.inf) or abs(got - want) <= 1e-5, (got, want)


def quarantined(conn: psycopg.Connection, table: str) -> dict[str, int]:
    return dict(conn.execute(
        "SELECT reason, count(*) FROM semindex.quarantined_semantic_blob_rows WHERE source_table = %s GROUP BY reason",
        (table,),
    ).fetchall())


def table_fingerprint(conn: psycopg.Connection, table: str) -> tuple:
    """Changes when any row is rewritten, or the table is rewritten or altered."""
    schema, name = table.split(".")
    rows = conn.execute(sql.SQL("SELECT count(*), md5(string_agg(ctid::text || ':' || xmin::text, ',' ORDER BY ctid)) FROM {}")
                        .format(sql.Identifier(schema, name))).fetchone()
    catalog = conn.execute(
        "SELECT c.relfilenode, c.xmin::text, (SELECT string_agg(a.attname || ':' || a.atttypid || ':' || a.attnotnull, ',' "
        "ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) "
        "FROM pg_class c WHERE c.oid = %s::regclass", (table,)
    ).fetchone()
    return (*rows, *catalog)


def queries_near(fixture: BlobFixture, rng, count: int, dimensions: int = 384, random_share: float = 0.5,
                 instance: str | None = None):
    """Near a stored vector (of `instance`, or any; realistic: a paraphrase), and a `random_share`
    of random ones."""
    stored = [v for key, v in fixture.vectors.items()
              if len(v) == dimensions and np.linalg.norm(v) > 0 and instance in (None, key[0])]
    stored = stored[:: max(1, len(stored) // 500)]
    queries = []
    for number in range(count):
        if number >= round(count * random_share):
            base = stored[int(rng.integers(len(stored)))]
            query = base + 0.3 * rng.standard_normal(dimensions) / np.sqrt(dimensions)
        else:
            query = rng.standard_normal(dimensions)
        queries.append(query / np.linalg.norm(query))
    return queries


# ---- settings ------------------------------------------------------------------------------------
def test_batch_size_and_maintenance_memory_settings_are_validated(monkeypatch):
    monkeypatch.delenv("SEMINDEX_MIGRATION_BATCH_SIZE", raising=False)
    monkeypatch.delenv("SEMINDEX_MIGRATION_MAINTENANCE_WORK_MEM", raising=False)
    assert settings.migration_batch_size() == 50_000
    assert settings.migration_maintenance_work_mem() == "256MB"
    monkeypatch.setenv("SEMINDEX_MIGRATION_BATCH_SIZE", "1_000")
    assert settings.migration_batch_size() == 1000
    assert settings.migration_batch_size(7) == 7  # the argument wins
    for bad in ("lots", "0", "-5", "2.5", "1000001"):
        monkeypatch.setenv("SEMINDEX_MIGRATION_BATCH_SIZE", bad)
        with pytest.raises(ValueError, match=f"SEMINDEX_MIGRATION_BATCH_SIZE=.*{bad}"):
            settings.migration_batch_size()
    with pytest.raises(ValueError, match="batch_size=0"):
        settings.migration_batch_size(0)
    monkeypatch.setenv("SEMINDEX_MIGRATION_MAINTENANCE_WORK_MEM", "2GB")
    assert settings.migration_maintenance_work_mem() == "2GB"
    assert settings.migration_maintenance_work_mem("65536") == "65536kB"
    for bad in ("256XB", "lots", "512kB", "-1MB", "3TB"):
        monkeypatch.setenv("SEMINDEX_MIGRATION_MAINTENANCE_WORK_MEM", bad)
        with pytest.raises(ValueError, match=f"SEMINDEX_MIGRATION_MAINTENANCE_WORK_MEM='{bad}'"):
            settings.migration_maintenance_work_mem()
    with pytest.raises(ValueError, match="dimensions=4096"):
        blob_table.check_index_dimensions(4096)
    with pytest.raises(ValueError, match="'a.b.c'"):
        semantic_blob.split_table_name("a.b.c")


# ---- the migration -------------------------------------------------------------------------------
def test_migration_quarantines_uncastable_rows_by_reason_and_a_second_run_changes_nothing(db, database_url, caplog):
    fixture = make_fixture(11, per_instance_384=300, per_instance_768=40)
    with psycopg.connect(database_url, autocommit=True) as conn:
        load_fixture(conn, TABLE, fixture)
        # Every DDL statement in this database is recorded from here on.
        conn.execute("CREATE TABLE public.ddl_log (tag text, at timestamptz DEFAULT clock_timestamp())")
        conn.execute("CREATE FUNCTION public.log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN INSERT INTO public.ddl_log (tag) VALUES (tg_tag); END $$")
        conn.execute("CREATE EVENT TRIGGER log_ddl ON ddl_command_start EXECUTE FUNCTION public.log_ddl()")

    with caplog.at_level(logging.INFO, logger="semindex.semantic_blob"):
        report = migrate(db, batch_size=97)

    assert report.mode == "vector" and report.status == "migrated" and report.phase_before == "jsonb"
    assert report.uncastable_rows == fixture.bad
    assert report.rows == len(fixture.vectors) == len(fixture.rows) - sum(fixture.bad.values())
    assert report.backfilled_rows == len(fixture.vectors)
    assert report.batches >= len(fixture.rows) // 97  # bounded batches, not one statement
    assert report.index_action == "built"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for reason, count in fixture.bad.items():
        assert f"{reason}={count}" in logged  # the count per reason is in the log
    assert "storage mode vector" in logged

    state = inspect_blob_table(db)
    assert (state.phase, state.column, state.column_type, state.not_null, state.staging) == (
        "migrated", "embedding", "vector", True, False)
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                            "WHERE attrelid = 'public.semantic_search_blob'::regclass AND attname = 'embedding'"
                            ).fetchone()[0] == "vector"
        definition = conn.execute("SELECT pg_get_indexdef(%s::regclass)", (f"public.{state.index_name}",)).fetchone()[0]
        assert "USING hnsw (((embedding)::vector(384)) vector_cosine_ops)" in definition
        assert "WHERE (vector_dims(embedding) = 384)" in definition
        assert_values_preserved(fixture, migrated_vectors(conn, TABLE))
        assert quarantined(conn, TABLE) == fixture.bad
        # The quarantine keeps the whole row, and its reason.
        kept = conn.execute("SELECT row_data ->> 'connector_id', (row_data -> 'embedding' ->> 0)::numeric "
                            "FROM semindex.quarantined_semantic_blob_rows WHERE reason = 'out_of_float4_range'").fetchall()
        assert {connector for connector, _ in kept} == {"connector"}
        assert sorted(first for _, first in kept) == sorted(
            Decimal(text) for text in ("1e39", "-1e39", "1e400", "340282356779733661637539395458142568448"))
        ddl_first_run = [tag for (tag,) in conn.execute("SELECT tag FROM public.ddl_log ORDER BY at")]
        assert "ALTER TABLE" in ddl_first_run and "CREATE INDEX" in ddl_first_run
        conn.execute("TRUNCATE public.ddl_log")
        before = table_fingerprint(conn, TABLE)

    again = migrate(db, batch_size=97)

    assert again.status == "already migrated" and again.steps == [] and again.uncastable_rows == {}
    assert again.rows == report.rows and again.index_action == "exists"
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute("SELECT tag FROM public.ddl_log").fetchall() == []  # no DDL at all
        assert table_fingerprint(conn, TABLE) == before  # no row rewritten
    metadata = again.as_metadata()
    assert metadata["mode"] == "vector" and metadata["status"] == "already migrated"
    assert all(isinstance(value, (str, int, float, type(None))) for value in metadata.values())


def test_a_half_backfilled_table_and_an_invalid_index_are_finished_on_the_next_run(db, database_url):
    fixture = make_fixture(12, per_instance_384=200, per_instance_768=20)
    good_keys = sorted(fixture.vectors)
    with psycopg.connect(database_url, autocommit=True) as conn:
        load_fixture(conn, TABLE, fixture)
        # What a run killed mid-backfill leaves: the staging column, filled for a prefix of the keys.
        conn.execute("ALTER TABLE public.semantic_search_blob ADD COLUMN embedding_vec vector")
        done = good_keys[: len(good_keys) // 2]
        conn.execute(
            "UPDATE public.semantic_search_blob AS t SET embedding_vec = t.embedding::text::vector "
            "FROM unnest(%s::text[], %s::text[], %s::text[]) AS d (ci, sk, rk) "
            "WHERE (t.connector_instance_id, t.scope_key, t.record_key) = (d.ci, d.sk, d.rk)",
            ([k[0] for k in done], [k[1] for k in done], [k[2] for k in done]),
        )
    assert inspect_blob_table(db).phase == "staging"

    # Each batch is a range scan of the primary key (never a sequential scan and sort, never OFFSET).
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(statement("semantic_blob", "create_support"))
        with conn.transaction():
            conn.execute(statement("semantic_blob", "batch_settings"))
            plan = "\n".join(row[0] for row in conn.execute(
                sql.SQL("EXPLAIN ") + statement(
                    "semantic_blob", "backfill_batch", table=TABLE, column="embedding",
                    staging="embedding_vec", after=sql.SQL(">")),
                {"instance": "notes", "scope_key": SCOPES[0], "record_key": "rec-384-000100",
                 "batch_size": 500, "source_table": TABLE},
            ))
    assert "semantic_search_blob_pkey" in plan and "Seq Scan" not in plan, plan

    report = migrate(db, batch_size=50)

    assert report.phase_before == "staging"
    assert report.backfilled_rows == len(good_keys) - len(done)
    assert report.uncastable_rows == fixture.bad
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert_values_preserved(fixture, migrated_vectors(conn, TABLE))

    # An interrupted CREATE INDEX CONCURRENTLY leaves an invalid index of the same name: cancel a
    # real one where it waits for an open snapshot.
    index = report.index_name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier("public", index)))
    failure = {}
    with psycopg.connect(database_url) as reader:
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT count(*) FROM public.semantic_search_blob")

        def build():
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("SET application_name = 'interrupted_blob_build'")
                try:
                    conn.execute(statement("semantic_blob", "create_index", index=index, table=TABLE, column="embedding",
                                           dimensions=384, m=16, ef_construction=64, concurrently=sql.SQL("CONCURRENTLY")))
                except psycopg.errors.QueryCanceled as error:
                    failure["error"] = error

        builder = threading.Thread(target=build)
        builder.start()
        with psycopg.connect(database_url, autocommit=True) as watcher:
            for _ in range(1200):
                waiting = watcher.execute("SELECT pid FROM pg_stat_activity WHERE application_name = "
                                          "'interrupted_blob_build' AND wait_event_type = 'Lock'").fetchone()
                if waiting:
                    watcher.execute("SELECT pg_cancel_backend(%s)", (waiting[0],))
                    break
                time.sleep(0.05)
            builder.join(timeout=120)
        reader.rollback()
    assert "error" in failure
    state = inspect_blob_table(db)
    assert (state.phase, state.index_valid) == ("swapped", False)
    with psycopg.connect(database_url, autocommit=True) as conn:
        before = table_fingerprint(conn, TABLE)

    rebuilt = migrate(db, concurrently=True)

    assert rebuilt.index_action == "rebuilt" and rebuilt.steps == [f"rebuilt index {index}"]
    assert inspect_blob_table(db).phase == "migrated"
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert table_fingerprint(conn, TABLE) == before
    assert migrate(db).status == "already migrated"

    # The build's memory and parallelism settings do not outlive it, on either path.
    with psycopg.connect(database_url, autocommit=True) as conn:
        defaults = [conn.execute(f"SHOW {name}").fetchone()[0] for name in ("maintenance_work_mem", "max_parallel_maintenance_workers")]
        for concurrently in (False, True):
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier("public", index)))
            state = blob_table.inspect(conn, TABLE, 384, None, None)
            build = semantic_blob.MigrationReport(table=TABLE, mode="vector", status="migrated", column="embedding",
                                                  phase_before=state.phase, maintenance_work_mem="96MB")
            blob_migration._build_index(db, state, build, HnswParameters(8, 32, "96MB"), concurrently)
            assert build.index_action == "built"
            assert [conn.execute(f"SHOW {name}").fetchone()[0] for name in ("maintenance_work_mem", "max_parallel_maintenance_workers")] == defaults
    assert inspect_blob_table(db).phase == "migrated"


def test_rows_written_after_the_backfill_passed_them_are_cast_in_the_swap(db, database_url):
    fixture = make_fixture(14, per_instance_384=60, per_instance_768=5, bad=False)
    late_vector = queries_near(fixture, np.random.default_rng(1), 1)[0]
    with psycopg.connect(database_url, autocommit=True) as conn:
        load_fixture(conn, TABLE, fixture)

    def writer_between_backfill_and_swap(line: str) -> None:
        # ProgressReporter.finish() emits once the backfill loop is done: a writer slips rows in
        # (one castable, two not) before the swap takes its lock.
        if "finished in" in line:
            with psycopg.connect(database_url, autocommit=True) as writer:
                writer.execute("INSERT INTO public.semantic_search_blob VALUES "
                               "('connector', 'notes', %s, 'aaa-late', %s), ('connector', 'notes', %s, 'aaa-late-empty', '[]'),"
                               "('connector', 'notes', %s, 'aaa-late-null', NULL)",
                               (SCOPES[0], json.dumps(late_vector.tolist()), SCOPES[0], SCOPES[0]))

    report = migrate(db, batch_size=25, progress_emit=writer_between_backfill_and_swap)

    assert report.status == "migrated"
    assert report.uncastable_rows == {"empty_array": 1, "null_embedding": 1}
    fixture.add(("notes", SCOPES[0], "aaa-late"), late_vector)
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert_values_preserved(fixture, migrated_vectors(conn, TABLE))
        assert quarantined(conn, TABLE) == {"empty_array": 1, "null_embedding": 1}
    assert inspect_blob_table(db).phase == "migrated"


def test_a_table_without_a_single_jsonb_embedding_column_is_refused_clearly(db, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL(CREATE_TABLE).format(sql.Identifier("public", "semantic_search_blob")))
        conn.execute("ALTER TABLE public.semantic_search_blob ADD COLUMN metadata jsonb")
    with pytest.raises(semantic_blob.BlobTableError, match="several jsonb columns .*embedding, metadata.*column="):
        migrate(db)
    report = migrate(db, column="embedding")  # said explicitly, it goes ahead
    assert report.status == "migrated" and report.rows == 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.not_a_blob (connector_instance_id text, scope_key text, record_key text, "
                     "body text, PRIMARY KEY (connector_instance_id, scope_key, record_key))")
        conn.execute("CREATE TABLE public.wrong_key (connector_instance_id text PRIMARY KEY, embedding jsonb)")
    with pytest.raises(semantic_blob.BlobTableError, match="no jsonb .*embedding column.*body text"):
        migrate(db, table="public.not_a_blob")
    with pytest.raises(semantic_blob.BlobTableError, match="primary key"):
        migrate(db, table="public.wrong_key")
    with pytest.raises(semantic_blob.BlobTableError, match="public.missing does not exist"):
        migrate(db, table="missing")


def test_a_differently_named_embedding_column_keeps_its_name(db, database_url):
    fixture = make_fixture(13, per_instance_384=20, per_instance_768=0, bad=False)
    with psycopg.connect(database_url, autocommit=True) as conn:
        load_fixture(conn, "legacy.blob", fixture)
        conn.execute("ALTER TABLE legacy.blob RENAME COLUMN embedding TO vec")
    report = migrate(db, table="legacy.blob", batch_size=7)
    assert (report.column, report.index_name) == ("vec", "blob_vec_384_hnsw")
    state = inspect_blob_table(db, table="legacy.blob")
    assert (state.phase, state.column, state.column_type) == ("migrated", "vec", "vector")
    query = queries_near(fixture, np.random.default_rng(5), 1)[0]
    assert_same_ranking(search_blob(db, query, k=5, connector_instance_id="notes", table="legacy.blob"),
                        fixture.brute_force(query, 5, "notes"))


# ---- kill safety ---------------------------------------------------------------------------------
PHASE_ORDER = {"startup": 0, "add embedding_vec": 1, "backfill": 2, "swap": 3, "index build": 4, "finished": 5}


class WorkerRun:
    """One migration worker process, its stderr collected line by line as it is written."""

    def __init__(self, url: str, table: str, env: dict, m: int, ef_construction: int) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), url, table, str(m), str(ef_construction)],
            cwd=PROJECT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def phase(self) -> str:
        """The last step the worker announced (startup before the first)."""
        current = "startup"
        for line in list(self.lines):
            if ": phase " in line:
                step = line.split(": phase ", 1)[1].split(" (", 1)[0]
                current = step if step in PHASE_ORDER else current
            elif line.startswith("worker: finished"):
                current = "finished"
        return current

    def wait_for(self, anchor: str, timeout: float = 180.0) -> bool:
        """Until the worker reaches `anchor` (or a later step); False if it exited first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if anchor == "startup" or PHASE_ORDER[self.phase()] >= PHASE_ORDER[anchor]:
                return self.process.poll() is None
            if self.process.poll() is not None:
                return False
            time.sleep(0.005)
        raise AssertionError(f"the worker never reached {anchor}: {self.lines[-5:]}")

    def finish(self) -> int:
        code = self.process.wait(timeout=300)
        self._reader.join(timeout=10)
        return code


def _with_application_name(url: str, name: str) -> str:
    return f"{url}&application_name={name}" if "?" in url else f"{url}?application_name={name}"


def _wait_for_backends_to_go(server_url: str, name: str) -> None:
    """A killed client's backend rolls back once it notices (client_connection_check_interval)."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        for _ in range(1200):
            if not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)).fetchone()[0]:
                return
            time.sleep(0.05)
    raise AssertionError(f"backends of {name} still running a minute after the kill")


def test_sigkill_at_20_random_points_then_the_next_run_matches_an_uninterrupted_one(db, database_url, server_url):
    fixture = make_fixture(2026, per_instance_384=6000, per_instance_768=500)
    reference, killed = "reference.semantic_search_blob", "killed.semantic_search_blob"
    hnsw = {"hnsw_m": 8, "hnsw_ef_construction": 32}
    batch_size = 150
    started = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn:
        load_fixture(conn, reference, fixture)
        conn.execute("CREATE SCHEMA killed")
        conn.execute("CREATE TABLE killed.semantic_search_blob (LIKE reference.semantic_search_blob INCLUDING ALL)")
        conn.execute("INSERT INTO killed.semantic_search_blob SELECT * FROM reference.semantic_search_blob")
        conn.execute("ANALYZE killed.semantic_search_blob")
    fixture_seconds = time.monotonic() - started

    uninterrupted = migrate(db, table=reference, batch_size=batch_size, **hnsw)
    assert uninterrupted.status == "migrated" and uninterrupted.uncastable_rows == fixture.bad

    env = {**os.environ, "SEMINDEX_MIGRATION_BATCH_SIZE": str(batch_size)}
    rng = random.Random(20260121)
    # Random delays, each counted from a point of the run, so the kills spread over every phase:
    # from launch (start-up, probe, early backfill), from the backfill's start, from the swap's
    # start (it lasts a fraction of a second), and over the index build (it restarts when killed).
    plan = ([("startup", rng.uniform(0.0, 2.0)) for _ in range(3)]
            + [("backfill", rng.uniform(0.05, 1.0)) for _ in range(9)]
            + [("swap", rng.uniform(0.0, 0.08)) for _ in range(3)]
            + [("index build", rng.uniform(0.1, 0.75) * max(uninterrupted.index_seconds, 1.0)) for _ in range(5)])
    kills = []
    for number, (anchor, delay) in enumerate(plan):
        name = f"blob_worker_{number}"
        run = WorkerRun(_with_application_name(database_url, name), killed, env, 8, 32)
        alive = run.wait_for(anchor)
        if alive:
            time.sleep(delay)
        was_running = run.process.poll() is None
        if was_running:
            run.process.send_signal(signal.SIGKILL)
        code = run.finish()
        assert was_running or code == 0, "\n".join(run.lines[-20:])
        _wait_for_backends_to_go(server_url, name)
        state = inspect_blob_table(db, table=killed)
        backfilled = None
        if state.phase == "staging":
            with db.connection() as conn:
                backfilled = conn.execute("SELECT count(embedding_vec) FROM killed.semantic_search_blob").fetchone()[0]
        kills.append({"anchor": anchor, "delay": round(delay, 3), "hit": run.phase() if was_running else "finished",
                      "catalog": state.phase, "backfilled": backfilled})

    final = WorkerRun(_with_application_name(database_url, "blob_worker_final"), killed, env, 8, 32)
    assert final.finish() == 0, "\n".join(final.lines[-20:])
    if all(kill["hit"] != "finished" for kill in kills):  # every kill landed: the last run finished the work
        assert any(line.startswith("worker: finished migrated") for line in final.lines), final.lines[-5:]

    hit = {kill["hit"] for kill in kills}
    print(f"\nfixture {fixture_seconds:.1f}s, uninterrupted run {uninterrupted.seconds:.1f}s "
          f"(backfill {uninterrupted.backfill_seconds:.1f}s, index {uninterrupted.index_seconds:.1f}s)")
    for number, kill in enumerate(kills):
        print(f"kill {number:2d}: {kill}")
    assert {"backfill", "index build"} <= hit and len(hit - {"finished"}) >= 3, kills
    assert sum(kill["hit"] != "finished" for kill in kills) >= 15, kills
    partial = [kill for kill in kills if kill["backfilled"] and 0 < kill["backfilled"] < len(fixture.vectors)]
    assert partial, f"no kill left a partly backfilled table: {kills}"

    assert migrate(db, table=killed).status == "already migrated"
    with psycopg.connect(database_url, autocommit=True) as conn:
        counts = conn.execute("SELECT (SELECT count(*) FROM reference.semantic_search_blob), "
                              "(SELECT count(*) FROM killed.semantic_search_blob), "
                              "(SELECT count(DISTINCT (connector_instance_id, scope_key, record_key)) "
                              " FROM killed.semantic_search_blob)").fetchone()
        assert counts == (len(fixture.vectors),) * 3
        different = conn.execute(
            "SELECT count(*) FROM reference.semantic_search_blob AS r "
            "FULL JOIN killed.semantic_search_blob AS k USING (connector_instance_id, scope_key, record_key) "
            "WHERE r.embedding IS NULL OR k.embedding IS NULL OR r.embedding <> k.embedding").fetchone()[0]
        assert different == 0
        assert_values_preserved(fixture, migrated_vectors(conn, killed))
        assert quarantined(conn, killed) == quarantined(conn, reference) == fixture.bad
    state = inspect_blob_table(db, table=killed)
    assert (state.phase, state.index_valid, state.not_null, state.staging) == ("migrated", True, True, False)


# ---- search --------------------------------------------------------------------------------------
def test_search_after_migration_matches_numpy_and_dimensions_never_interfere(db, database_url):
    fixture = make_fixture(21, per_instance_384=1200, per_instance_768=150)
    with psycopg.connect(database_url, autocommit=True) as conn:
        load_fixture(conn, TABLE, fixture)
    rng = np.random.default_rng(99)
    queries = queries_near(fixture, rng, 6)
    before = [search_blob(db, query, k=10, connector_instance_id="gmail-ann") for query in queries[:2]]
    report = migrate(db, batch_size=400)
    assert report.status == "migrated"
    # The JSONB brute force before and pgvector after give the same answer.
    for query, hits in zip(queries[:2], before, strict=True):
        assert_same_ranking(hits, fixture.brute_force(query, 10, "gmail-ann"))
        assert_same_ranking(search_blob(db, query, k=10, connector_instance_id="gmail-ann"), hits)

    cases = [
        {"connector_instance_id": "gmail-ann"},
        {"connector_instance_id": "slack-acme", "scope_keys": [SCOPES[1]]},
        {"connector_instance_id": "notes", "scope_keys": [SCOPES[0], SCOPES[3]]},
    ]
    for query in queries:
        for case in cases:
            for k in (1, 10, 50):
                expected = fixture.brute_force(query, k, case["connector_instance_id"], case.get("scope_keys"))
                assert_same_ranking(search_blob(db, query, k=k, **case), expected)
        keys = [record for record, _, _ in fixture.brute_force(query, 400, "notes")][::7]
        expected = fixture.brute_force(query, 10, "notes", record_keys=keys)
        assert_same_ranking(search_blob(db, query, k=10, connector_instance_id="notes", record_keys=keys), expected)
    # The zero vector (NaN cosine) comes last, as inf, when the page reaches it.
    zero_scope = fixture.matching("notes", 384, [SCOPES[3]])[0]
    hits = search_blob(db, queries[0], k=len(zero_scope) + 5, connector_instance_id="notes", scope_keys=[SCOPES[3]])
    assert len(hits) == len(zero_scope) and hits[-1][0] == "rec-384-zero" and hits[-1][2] == np.inf
    # Fewer matching rows than k: all of them; a scope of nothing: nothing.
    assert len(search_blob(db, queries[0], k=50, connector_instance_id="notes", record_keys=keys[:3])) == 3
    assert search_blob(db, queries[0], k=5, connector_instance_id="nobody") == []

    # 768-dimensional rows share the table: found exactly, never through (or in) the 384 index.
    for query in queries_near(fixture, rng, 3, dimensions=768):
        for case in cases:
            expected = fixture.brute_force(query, 10, case["connector_instance_id"], case.get("scope_keys"))
            hits = search_blob(db, query, k=10, **case)
            assert_same_ranking(hits, expected)
            assert all(record.startswith("rec-768-") for record, _, _ in hits)
    with db.connection() as conn:
        dims = dict(conn.execute("SELECT vector_dims(embedding), count(*) FROM public.semantic_search_blob GROUP BY 1"))
        assert dims == {384: 3 * 1200 + 1, 768: 3 * 150, 8: len(EDGE_ROWS)}
        plan_768 = "\n".join(row[0] for row in conn.execute(
            "EXPLAIN SELECT record_key FROM public.semantic_search_blob WHERE vector_dims(embedding) = 768 "
            "ORDER BY embedding::vector(768) <=> %s::vector(768) LIMIT 10", ("[" + ",".join(["0.1"] * 768) + "]",)))
        assert report.index_name not in plan_768
        plan_384 = "\n".join(row[0] for row in conn.execute(
            "EXPLAIN SELECT record_key FROM public.semantic_search_blob WHERE vector_dims(embedding) = 384 "
            "ORDER BY embedding::vector(384) <=> %s::vector(384) LIMIT 10", ("[" + ",".join(["0.1"] * 384) + "]",)))
        assert report.index_name in plan_384  # the partial expression index serves its dimension


def test_the_graph_path_returns_k_hits_whenever_k_rows_match(db, database_url):
    fixture = make_fixture(22, per_instance_384=2000, per_instance_768=0, bad=False, intrinsic_dimensions=12)
    with psycopg.connect(database_url, autocommit=True) as conn:
        load_fixture(conn, TABLE, fixture)
    migrate(db, batch_size=5000, hnsw_m=8, hnsw_ef_construction=32)
    rng = np.random.default_rng(7)
    # exact_threshold=0 and min_ann_share=0 send every unfiltered query through the HNSW graph.
    graph = {"settings": PlannerSettings(exact_threshold=0, min_ann_share=0.0)}
    with db.connection() as conn:
        plan = "\n".join(row[0] for row in conn.execute(
            sql.SQL("EXPLAIN ") + statement("semantic_blob", "search_ann", table=TABLE, column="embedding", dimensions=384),
            {"instance": "gmail-ann", "scope_keys": [], "limit": 10, "query": "[" + ",".join(["0.1"] * 384) + "]"}))
        assert "semantic_search_blob_embedding_384_hnsw" in plan
    recalls = []
    # Queries from the data's own distribution (an HNSW graph is built for those; a random direction
    # in 384 dimensions is nearly equidistant from everything).
    for query in queries_near(fixture, rng, 6, random_share=0.0, instance="gmail-ann"):
        for scope_keys in (None, [SCOPES[2]]):
            expected = fixture.brute_force(query, 20, "gmail-ann", scope_keys)
            hits = search_blob(db, query, k=20, connector_instance_id="gmail-ann", scope_keys=scope_keys, **graph)
            assert len(hits) == 20  # never short, however selective the scope
            assert [hit[2] for hit in hits] == sorted(hit[2] for hit in hits)
            truth = {(record, scope): distance for record, scope, distance in
                     fixture.brute_force(query, 10_000, "gmail-ann", scope_keys)}
            for record, scope, distance in hits:  # every hit in scope, with its exact distance
                assert abs(truth[(record, scope)] - distance) <= 1e-5
            recalls.append(len({h[:2] for h in hits} & {e[:2] for e in expected}) / 20)
    print(f"\ngraph path recall@20 over {len(recalls)} queries: {np.mean(recalls):.3f} (min {min(recalls):.2f})")
    assert np.mean(recalls) >= 0.9, [round(r, 2) for r in recalls]
    # Fewer matching rows than k through the graph path: the short answer is completed exactly.
    tiny = {f"tiny-{n}": vector for n, vector in enumerate(queries_near(fixture, rng, 5))}
    with db.connection() as conn:
        for record, vector in tiny.items():
            conn.execute("INSERT INTO public.semantic_search_blob VALUES ('connector', 'tiny', %s, %s, %s::vector)",
                         (SCOPES[0], record, json.dumps(vector.tolist())))
            fixture.add(("tiny", SCOPES[0], record), vector)
    query = queries_near(fixture, rng, 1)[0]
    assert_same_ranking(search_blob(db, query, k=20, connector_instance_id="tiny", **graph),
                        fixture.brute_force(query, 20, "tiny"))


# ---- JSONB mode --------------------------------------------------------------------------------
def _url_as(url: str, role: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


def restrict_to_a_role_without_pgvector(admin: psycopg.Connection, database: str, role: str) -> None:
    """pgvector stays out of reach of `role` in `database`, whether this build marks it trusted or not."""
    trusted = admin.execute("SELECT bool_or(trusted) FROM pg_available_extension_versions WHERE name = 'vector'").fetchone()[0]
    assert admin.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone()[0] == 0
    if trusted:
        # Anyone with CREATE on the database could create a trusted pgvector: take that away, and set
        # up what the role could then no longer create itself.
        admin.execute(sql.SQL("REVOKE CREATE ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))
        admin.execute("CREATE EXTENSION btree_gin; CREATE EXTENSION pg_trgm")
        admin.execute(sql.SQL("CREATE SCHEMA semindex AUTHORIZATION {}").format(sql.Identifier(role)))
    else:
        admin.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(database), sql.Identifier(role)))


def test_jsonb_mode_for_a_role_that_may_not_create_the_vector_extension(server_url, database_url, caplog):
    fixture = make_fixture(31, per_instance_384=250, per_instance_768=30)
    role = f"blob_owner_{uuid.uuid4().hex[:10]}"
    database = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(sql.Identifier(role)))
    db = None
    try:
        with psycopg.connect(database_url, autocommit=True) as admin:
            restrict_to_a_role_without_pgvector(admin, database, role)
            load_fixture(admin, TABLE, fixture)
            admin.execute(sql.SQL("ALTER TABLE public.semantic_search_blob OWNER TO {}").format(sql.Identifier(role)))
        role_url = _url_as(database_url, role)
        with psycopg.connect(role_url, autocommit=True) as probe:
            assert probe.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0] is False
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                probe.execute("CREATE EXTENSION vector")

        with caplog.at_level(logging.WARNING, logger="semindex.database"):
            db = Database(role_url)  # bootstraps
            status = db.bootstrap()  # and again: still one warning for this database
        assert db.vector_mode == "jsonb" and status.vector is None and status.btree_gin
        warnings = [record.getMessage() for record in caplog.records if "JSONB mode" in record.getMessage()]
        assert len(warnings) == 1 and "permission denied" in warnings[0], warnings
        with db.connection() as conn:
            assert conn.execute("SELECT count(*) FROM semindex.raw_records").fetchone()[0] == 0
        # A pgvector table needs pgvector and says so plainly; the pipeline uses the database's own
        # storage, which makes a jsonb table in this mode (tests/test_jsonb_mode.py).
        from semindex.lifecycle import register_version
        from semindex.vectors.storage import PGVECTOR

        version = register_version(db, "tiny", "hashing-64", 64)
        with pytest.raises(VectorExtensionMissing, match=r"pgvector extension is not installed.*permission denied.*"
                           r"required for this statement \(PostgreSQL said: type \"vector\" does not exist.*CREATE EXTENSION vector"):
            PGVECTOR.create_table(db, version)
        with pytest.raises(VectorExtensionMissing, match="pgvector is required for HNSW indexes"):
            db.require_vector("HNSW indexes")

        with psycopg.connect(role_url, autocommit=True) as conn:
            before = table_fingerprint(conn, TABLE)
        report = migrate(db)
        assert (report.mode, report.status, report.column) == ("jsonb", "jsonb fallback", "embedding")
        assert report.uncastable_rows == fixture.bad  # counted, not deleted
        assert report.rows == len(fixture.rows) and report.index_action is None
        assert report.as_metadata()["mode"] == "jsonb"
        with psycopg.connect(role_url, autocommit=True) as conn:
            assert table_fingerprint(conn, TABLE) == before  # nothing rewritten, still JSONB
        assert inspect_blob_table(db).column_type == "jsonb"

        rng = np.random.default_rng(3)
        cases = [
            {"connector_instance_id": "gmail-ann"},
            {"connector_instance_id": "slack-acme", "scope_keys": [SCOPES[1], SCOPES[2]]},
            {"connector_instance_id": "notes", "scope_keys": [SCOPES[3]]},
        ]
        for query in queries_near(fixture, rng, 4):
            for case in cases:
                for k in (1, 7, 60):
                    assert_same_ranking(search_blob(db, query, k=k, **case),
                                        fixture.brute_force(query, k, case["connector_instance_id"], case.get("scope_keys")))
            keys = [record for record, _, _ in fixture.brute_force(query, 200, "gmail-ann")][::5]
            assert_same_ranking(search_blob(db, query, k=10, connector_instance_id="gmail-ann", record_keys=keys),
                                fixture.brute_force(query, 10, "gmail-ann", record_keys=keys))
        for query in queries_near(fixture, rng, 2, dimensions=768):
            assert_same_ranking(search_blob(db, query, k=15, connector_instance_id="slack-acme"),
                                fixture.brute_force(query, 15, "slack-acme"))
        # Ranks before it limits: the nearest row is written last, after every other row of its scope.
        query = queries_near(fixture, rng, 1)[0]
        with psycopg.connect(role_url, autocommit=True) as conn:
            conn.execute("INSERT INTO public.semantic_search_blob VALUES ('connector', 'gmail-ann', %s, 'zz-nearest', %s)",
                         (SCOPES[0], json.dumps(query.tolist())))
        fixture.add(("gmail-ann", SCOPES[0], "zz-nearest"), query)
        hits = search_blob(db, query, k=5, connector_instance_id="gmail-ann")
        assert hits[0][0] == "zz-nearest" and abs(hits[0][2]) <= 1e-6
        assert_same_ranking(hits, fixture.brute_force(query, 5, "gmail-ann"))
        # Rows the migration would refuse are skipped by the search, never an error.
        for instance in INSTANCES:
            hits = search_blob(db, query, k=1000, connector_instance_id=instance)
            assert hits and all((instance, scope, record) in fixture.vectors for record, scope, _ in hits)
    finally:
        if db is not None:
            db.close()
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_the_semantic_blob_stage_and_db_migrate_adopt_the_table(db, database_url, tmp_path, monkeypatch, capsys):
    import dagster as dg

    from semindex_app.cli import main as semindex_main
    from tests.conftest import sample_records, write_jsonl
    from tests.dagster_helpers import materialize_graph, metadata, raw_records_config, register_tiny_version

    fixture = make_fixture(5, per_instance_384=40, per_instance_768=5)
    with psycopg.connect(database_url, autocommit=True) as conn:
        load_fixture(conn, TABLE, fixture)
    version = register_tiny_version(database_url, "blob-tiny", 16)
    corpus = write_jsonl(tmp_path / "c.jsonl", sample_records(per_stream=1))
    with dg.instance_for_test() as instance:
        result = materialize_graph(instance, database_url, version.version_key, raw_records_config(corpus))
    assert metadata(result, "vector_column")["storage_mode"] == "vector"
    stage = metadata(result, "semantic_blob")  # its own unpartitioned stage, run beside the version's
    assert stage["storage_mode"] == "vector" and stage["status"] == "migrated"
    assert stage["dagster/row_count"] == stage["rows"] == len(fixture.vectors)
    with psycopg.connect(database_url) as conn:
        assert quarantined(conn, TABLE) == fixture.bad

    monkeypatch.setenv("DATABASE_URL", database_url)
    assert semindex_main(["db", "migrate", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "already migrated" and report["mode"] == "vector"
    assert semindex_main(["db", "migrate", "--table", "public.no_such_table"]) == 1
    assert "public.no_such_table does not exist" in capsys.readouterr().err
