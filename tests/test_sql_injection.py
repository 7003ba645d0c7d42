"""SQL-injection safety on every path that builds SQL, on a real PostgreSQL.

Connector ids, instance ids, streams, record keys, field names, version keys and query text full of
SQL metacharacters go through ingest, chunking, the embedding backfill, the index builds, the
retained-size projection, the hot-source partial-index DDL, search, the version registry and one
materialization of the Dagster graph. Around every stage the catalog (relations, functions,
triggers, schemas, roles) and a fingerprint of every table are snapshotted: a payload that ran as
SQL would show up as a change no stage is allowed to make. Canary tables named like the payloads'
targets must keep their rows, and every value must come back byte for byte.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from semindex import chunks, embeddings, indexes, raw_records, retained_size
from semindex.chunking import ChunkingParameters, chunk_record_fields
from semindex.database import open_database
from semindex.partial_indexes import HotSourceBand, managed_partial_indexes, partial_index_name, sync_partial_indexes
from semindex.errors import InvalidInput
from semindex.search.query import parse_query
from semindex.search import PlannerSettings, Scope, Searcher, SearchRequest, search, semantic_overscan
from semindex.sql_files import statement
from semindex import lifecycle
from tests.conftest import _database_url, write_jsonl
from tests.dagster_helpers import check_verdicts, materialize_graph, raw_records_config, register_tiny_version

# Every value below is used as connector id, connector instance id, stream, record key, field name,
# field text, query text and version key. All are distinct, non-blank and free of NUL (PostgreSQL
# text cannot hold NUL; ingest quarantines it, see BAD_LINES).
PAYLOADS = [
    "'",
    "''",
    '"',
    "'; DROP TABLE semindex.chunks; --",
    "$$; DROP TABLE x; $$",
    "$tag$",
    "\\",
    "\\'",
    "\\N",  # COPY text format's NULL marker
    "\\.",  # COPY text format's end-of-data marker
    "/* */",
    "--",
    "%s",
    "%(x)s",
    "%",  # LIKE wildcards: a scope built with LIKE would widen
    "_",
    "{}",
    "{vectors}",  # a placeholder of our own SQL templates
    "tab\there\nnewline\rreturn\x0bvtab\x1bescape\x7fdel",
    "\u02bc",  # ʼ modifier letter apostrophe
    "\u2019",  # ’ right single quotation mark
    "\uff07",  # ＇ fullwidth apostrophe
    "\uff1b",  # ； fullwidth semicolon
    ")) OR 1=1 --",
    "' OR '1'='1",
    "x" * 200,  # far beyond PostgreSQL's 63-byte identifier limit
    "y" * 63 + "A",  # these two collide if anything truncates to an identifier
    "y" * 63 + "B",
    "MixedCase",  # these two collide if anything folds case (unquoted identifiers do)
    "mixedcase",
    "semindex.chunks",  # a qualified-name trick
    "\u202eevil\u202c",  # right-to-left override
    "caf\u00e9",  # NFC and NFD spellings must stay two sources
    "cafe\u0301",
    " padded ",
    "a:* & b | !c <-> d",  # tsquery operators
    "🔥 漢字",
]
assert len(set(PAYLOADS)) == len(PAYLOADS)

# Sources whose parts collide when joined with a delimiter; the same text in each.
DELIMITER_TWINS = [("a/b", "c"), ("a", "b/c"), ("a:b", "c"), ("a", "b:c"), ('["a"', '"b"]'), ('a","b', "c")]

# A source large enough for the planner to pick its partial HNSW index, named with payloads.
BIG_SOURCE = ("big'); DROP TABLE semindex.raw_records; --", "$$ DROP TABLE x $$ \\ \u02bc")
BIG_RECORDS = 1500
WORDS = ["river", "budget", "football", "election", "guitar", "harbour", "pepper", "orbit", "lantern",
         "meadow", "copper", "violin", "glacier", "saddle", "thunder", "walnut", "falcon"]

UPDATED_AT = "2024-05-01T00:00:00Z"
BAD_LINES = [  # quarantined, never written
    {"connector_id": "c", "connector_instance_id": "nul\u0000'; DROP TABLE x; --", "stream": "s", "record_key": "k",
     "fields": {"text": "t"}, "updated_at": UPDATED_AT},
    {"connector_id": "c", "connector_instance_id": "i", "stream": "   ", "record_key": "k",
     "fields": {"text": "t"}, "updated_at": UPDATED_AT},
]
VERSION_KEY = "tiny"
VERSION_KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,62}")  # the CHECK in sql/schema.sql
HNSW = indexes.HnswParameters(m=8, ef_construction=32)
HOT_BAND = HotSourceBand(min_rows=3, max_share=1.0, max_sources=100)


def payload_records() -> list[dict]:
    """Two records per payload source: one whose every key is the payload, one with a shared key."""
    records = []
    for i, payload in enumerate(PAYLOADS):
        source = {"connector_id": payload, "connector_instance_id": payload, "stream": payload, "updated_at": UPDATED_AT}
        records.append({**source, "record_key": payload,
                        "fields": {payload: f"token{i:02d} common {payload}", "body": f"common body of source {i:02d}"}})
        records.append({**source, "record_key": "shared", "fields": {"text": f"common shared note {i:02d}"}})
    return records


def twin_records() -> list[dict]:
    return [
        {"connector_id": "twin", "connector_instance_id": instance, "stream": stream, "record_key": "k",
         "fields": {"text": "delimiter twin"}, "updated_at": UPDATED_AT}
        for instance, stream in DELIMITER_TWINS
    ]


def big_records() -> list[dict]:
    instance, stream = BIG_SOURCE
    return [
        {"connector_id": instance, "connector_instance_id": instance, "stream": stream, "record_key": f"m{n:05d}",
         "fields": {"text": f"{WORDS[n % 17]} {WORDS[n % 13]} {WORDS[n % 11]} {WORDS[n % 7]} number{n}"},
         "updated_at": UPDATED_AT}
        for n in range(BIG_RECORDS)
    ]


# ---- catalog snapshots ---------------------------------------------------------------------------
USER_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname !~ '^pg_(toast_)?temp_'"


@dataclass(frozen=True)
class Catalog:
    relations: frozenset  # (schema, name, relkind) outside the system schemas
    functions: frozenset
    triggers: frozenset
    schemas: frozenset
    roles: frozenset
    tables: dict  # (schema, table) -> (row count, md5 over the rows), every table in semindex and public

    def changes(self, later: Catalog) -> dict:
        return {
            "relations_added": later.relations - self.relations,
            "relations_removed": self.relations - later.relations,
            "other": {name for name in ("functions", "triggers", "schemas", "roles") if getattr(self, name) != getattr(later, name)},
            "tables_changed": {t for t in self.tables.keys() | later.tables.keys() if self.tables.get(t) != later.tables.get(t)},
        }


def snapshot(db) -> Catalog:
    with db.connection() as conn:
        relations = frozenset(conn.execute(
            f"SELECT n.nspname, c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS}"
        ).fetchall())
        functions = frozenset(conn.execute(
            f"SELECT n.nspname, p.proname, p.prokind::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {USER_SCHEMAS}"
        ).fetchall())
        triggers = frozenset(row[0] for row in conn.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"))
        schemas = frozenset(row[0] for row in conn.execute(f"SELECT n.nspname FROM pg_namespace n WHERE {USER_SCHEMAS}"))
        roles = frozenset(row[0] for row in conn.execute("SELECT rolname FROM pg_roles"))
        tables = {}
        for schema, name, kind in sorted(relations):
            if kind in ("r", "p") and schema in ("semindex", "public"):
                tables[(schema, name)] = conn.execute(
                    sql.SQL("SELECT count(*), md5(coalesce(string_agg(md5(t::text), '' ORDER BY md5(t::text)), '')) FROM {} AS t")
                    .format(sql.Identifier(schema, name))
                ).fetchone()
    return Catalog(relations, functions, triggers, schemas, roles, tables)


NO_CHANGE = {"relations_added": set(), "relations_removed": set(), "other": set(), "tables_changed": set()}


def semindex_tables(*names: str) -> set:
    return {("semindex", name) for name in names}


def create_canaries(db) -> None:
    """Tables named like the payloads' targets (`DROP TABLE x`), each with one row."""
    with db.connection() as conn:
        for table in ("x", "canary"):
            conn.execute(sql.SQL("CREATE TABLE {} (note text)").format(sql.Identifier("public", table)))
            conn.execute(sql.SQL("INSERT INTO {} VALUES ('still here')").format(sql.Identifier("public", table)))


def assert_canaries(db) -> None:
    with db.connection() as conn:
        for table in ("x", "canary"):
            rows = conn.execute(sql.SQL("SELECT note FROM {}").format(sql.Identifier("public", table))).fetchall()
            assert rows == [("still here",)], table


# ---- the pipeline on the payload corpus, stage by stage --------------------------------------------
@pytest.fixture(scope="module")
def injected(server_url, tmp_path_factory):
    """Every library stage run on the payload corpus, with a catalog snapshot after each."""
    name = f"inj_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _database_url(server_url, name)
    db = open_database(url)
    create_canaries(db)
    records = payload_records() + twin_records() + big_records()
    path = write_jsonl(tmp_path_factory.mktemp("payloads") / "payloads.jsonl", records + BAD_LINES)

    snapshots = {"bootstrap": snapshot(db)}
    ingest = raw_records.ingest_file(db, path)
    snapshots["ingest"] = snapshot(db)
    chunks.sync_chunks(db, ChunkingParameters())
    snapshots["chunks"] = snapshot(db)
    version = lifecycle.register_version(db, VERSION_KEY, "hashing-32", 32)
    embeddings.backfill(db, version)
    snapshots["backfill"] = snapshot(db)
    indexes.build_hnsw(db, version, HNSW)
    indexes.build_lexical_index(db)
    snapshots["indexes"] = snapshot(db)
    retained_size.refresh_projection(db)
    snapshots["projection"] = snapshot(db)
    partial = sync_partial_indexes(db, version, HOT_BAND, HNSW)
    snapshots["partial"] = snapshot(db)
    yield {"db": db, "version": version, "records": records, "ingest": ingest, "partial": partial, "snapshots": snapshots}

    from semindex import database as database_module

    database_module._open_databases.pop(url).close()
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _stage_changes(injected, before: str, after: str) -> dict:
    return injected["snapshots"][before].changes(injected["snapshots"][after])


def _sources(records) -> Counter:
    return Counter((r["connector_instance_id"], r["stream"]) for r in records)


def test_ingest_stores_every_payload_byte_for_byte_and_changes_nothing_else(injected):
    db, records = injected["db"], injected["records"]
    assert injected["ingest"].inserted == len(records)
    assert injected["ingest"].quarantined == len(BAD_LINES)
    assert _stage_changes(injected, "bootstrap", "ingest") == {
        **NO_CHANGE,
        # source_row_deltas: the row counts the writes keep (semindex.row_counts).
        "tables_changed": semindex_tables("raw_records", "retained_size_projection", "ingested_files", "quarantined_records",
                                          "source_row_deltas"),
    }
    with db.connection() as conn:
        stored = conn.execute(
            "SELECT connector_id, connector_instance_id, stream, record_key, fields FROM semindex.raw_records"
        ).fetchall()
        sources = conn.execute("SELECT connector_instance_id, stream FROM semindex.retained_size_projection").fetchall()
        reasons = [row[0] for row in conn.execute("SELECT reason FROM semindex.quarantined_records ORDER BY line_no")]

    def key(cid, instance, stream, record_key, fields):
        return (cid, instance, stream, record_key, json.dumps(fields, sort_keys=True, ensure_ascii=False))

    assert sorted(key(*row) for row in stored) == sorted(
        key(r["connector_id"], r["connector_instance_id"], r["stream"], r["record_key"], r["fields"]) for r in records
    )
    assert sorted(sources) == sorted(_sources(records))
    assert reasons == ["connector_instance_id contains a NUL byte, which PostgreSQL text cannot store", "stream is empty"]
    assert_canaries(db)


def test_chunking_keeps_every_payload_and_never_merges_delimiter_twins(injected):
    db, records = injected["db"], injected["records"]
    # The projection rows are marked dirty again, but ingest left them dirty already. The chunk stage
    # also writes the records' lexical documents and their term statistics.
    assert _stage_changes(injected, "ingest", "chunks") == {
        **NO_CHANGE,
        "tables_changed": semindex_tables("raw_records", "chunks", "lexical_documents", "lexical_terms", "lexical_sources",
                                          "source_row_deltas"),
    }
    expected = sorted(
        (r["connector_id"], r["connector_instance_id"], r["stream"], r["record_key"], c.field, c.chunk_no, c.content, c.semantic_key)
        for r in records
        for c in chunk_record_fields(r["connector_instance_id"], r["stream"], r["record_key"], r["fields"], ChunkingParameters())
    )
    with db.connection() as conn:
        stored = conn.execute(
            "SELECT connector_id, connector_instance_id, stream, record_key, field, chunk_no, content, semantic_key FROM semindex.chunks"
        ).fetchall()
    assert sorted(stored) == expected
    twins = [row for row in stored if row[0] == "twin"]
    assert sorted((row[1], row[2]) for row in twins) == sorted(DELIMITER_TWINS)  # one chunk each, none lost to a key clash


def test_the_backfill_copies_every_payload_into_the_version_table_and_creates_only_that_table(injected):
    db, version = injected["db"], injected["version"]
    table = version.table_name
    assert _stage_changes(injected, "chunks", "backfill") == {
        **NO_CHANGE,
        "relations_added": {("semindex", name, kind) for name, kind in
                            ((table, "r"), (f"{table}_pkey", "i"), (f"{table}_scope", "i"), (f"{table}_content", "i"),
                             (f"{table}_field", "i"))},
        "tables_changed": semindex_tables("embedding_versions", "embedding_backfill", table),
        "other": {"triggers"},
    }
    # The one new trigger: the version table's hand-over of its texts' graph elements.
    snapshots = injected["snapshots"]
    assert snapshots["backfill"].triggers - snapshots["chunks"].triggers == {"semindex_hand_over_texts"}
    with db.connection() as conn:
        mismatched = conn.execute(sql.SQL(
            "SELECT count(*) FROM semindex.chunks c FULL JOIN {} v USING (chunk_id) "
            "WHERE (c.connector_instance_id, c.stream, c.record_key, c.field) IS DISTINCT FROM (v.connector_instance_id, v.stream, v.record_key, v.field)"
        ).format(sql.Identifier("semindex", table))).fetchone()[0]
    assert mismatched == 0


def test_index_builds_and_the_projection_create_exactly_their_own_objects(injected):
    version = injected["version"]
    assert _stage_changes(injected, "backfill", "indexes") == {
        **NO_CHANGE,
        # Each table's record-key btree comes with its search indexes, after loading.
        "relations_added": {("semindex", version.hnsw_index_name, "i"), ("semindex", indexes.LEXICAL_INDEX_NAME, "i"),
                            ("semindex", f"{version.table_name}_record_key", "i"), ("semindex", "lexical_documents_record_key", "i")},
    }
    # The projection reads the kept row counts: the version's table is counted once (its triggers
    # carry the names the bootstrap gave the fixed tables' ones), the deltas folded.
    assert _stage_changes(injected, "indexes", "projection") == {
        **NO_CHANGE,
        "tables_changed": semindex_tables("retained_size_projection", "source_rows", "source_row_deltas", "counted_relations"),
    }
    expected = {}
    for record in injected["records"]:
        cut = chunk_record_fields(record["connector_instance_id"], record["stream"], record["record_key"], record["fields"], ChunkingParameters())
        source = (record["connector_instance_id"], record["stream"])
        records, vectors = expected.get(source, (0, 0))
        expected[source] = (records + 1, vectors + len(cut))
    projected = {
        (row.connector_instance_id, row.stream): (row.record_count, row.embedded_counts[VERSION_KEY])
        for row in retained_size.projection(injected["db"])
        if not row.dirty
    }
    assert projected == expected


def _predicate(instance: str, stream: str) -> str:
    """The predicate as PostgreSQL deparses it: standard_conforming_strings is on, so only quotes
    are doubled; every other character (backslashes, control characters) stands as is."""
    def literal(value: str) -> str:
        return "'" + value.replace("'", "''") + "'::text"

    return f"((connector_instance_id = {literal(instance)}) AND (stream = {literal(stream)}))"


def test_the_partial_index_ddl_carries_every_payload_as_an_exact_literal(injected):
    db, version, partial = injected["db"], injected["version"], injected["partial"]
    # Every payload source (three chunks) and the big one are in the band; the one-chunk twins are not.
    hot = {(payload, payload) for payload in PAYLOADS} | {BIG_SOURCE}
    names = {partial_index_name(version, instance, stream): (instance, stream) for instance, stream in hot}
    assert len(names) == len(hot)
    assert sorted(partial.created) == sorted(names)
    assert _stage_changes(injected, "projection", "partial") == {
        **NO_CHANGE,
        "relations_added": {("semindex", name, "i") for name in names},
        "tables_changed": semindex_tables("partial_hnsw_indexes"),
    }
    assert sorted(managed_partial_indexes(db, version)) == sorted(names)
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_get_expr(i.indpred, i.indrelid), i.indisvalid, m.connector_instance_id, m.stream "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN semindex.partial_hnsw_indexes m ON m.index_name = c.relname"
        ).fetchall()
    assert len(rows) == len(names)
    for index_name, predicate, valid, instance, stream in rows:
        assert (instance, stream) == names[index_name]
        assert predicate == _predicate(instance, stream), index_name
        assert valid
    assert_canaries(db)


def test_searching_the_payload_named_hot_source_uses_its_partial_index_and_stays_inside_it(injected):
    db, version = injected["db"], injected["version"]
    instance, stream = BIG_SOURCE
    index_name = partial_index_name(version, instance, stream)
    searcher = Searcher(db, planner=PlannerSettings(exact_threshold=100))
    before = snapshot(db)
    scope = Scope(connector_instance_ids=(instance,), streams=(stream,))
    response = searcher.search(SearchRequest("football guitar copper", mode="semantic", k=20, scope=scope, version_key=VERSION_KEY))
    assert response.meta.semantic_plans == {f"{instance}/{stream}": "partial"}
    assert len(response.hits) == 20
    assert {(hit.connector_instance_id, hit.stream) for hit in response.hits} == {BIG_SOURCE}

    # The searcher's statement, with the searcher's settings, can walk the payload's index: its
    # predicate is proven from the payload's values. Sorting is off for the EXPLAIN because, once
    # autovacuum has analyzed the table, the planner rightly sorts a source this small instead.
    with db.connection() as conn:
        conn.execute(statement("search", "ann_settings"), ("200", "20000"))
        conn.execute("SET LOCAL enable_sort = off")
        query = searcher.semantic.query_vector(version, "football guitar copper")
        plan = "\n".join(row[0] for row in conn.execute(
            sql.SQL("EXPLAIN ") + statement("search", "semantic_ann", vectors=version.vectors_table, operator=sql.SQL("<=>")),
            {"query": query, "instance": instance, "stream": stream, **Scope().sql_params(), "limit": semantic_overscan(20)},
        ))
    assert f"Index Scan using {index_name}" in plan, plan
    assert snapshot(db) == before


@pytest.mark.parametrize("mode", ["lexical", "semantic", "hybrid"])
def test_a_scope_of_payloads_returns_exactly_its_own_record(injected, mode):
    db = injected["db"]
    before = snapshot(db)
    for i, payload in enumerate(PAYLOADS):
        pinned = Scope((payload,), (payload,), (payload,), (payload,))
        hits = search(db, SearchRequest(f"token{i:02d}", mode=mode, k=10, scope=pinned, version_key=VERSION_KEY)).hits
        assert [(h.connector_id, h.connector_instance_id, h.stream, h.record_key, h.field) for h in hits] == [(payload,) * 5], payload

        # The whole source: every one of its chunks, and nothing from any other source.
        source = Scope(connector_instance_ids=(payload,), streams=(payload,))
        hits = search(db, SearchRequest("common", mode=mode, k=25, scope=source, version_key=VERSION_KEY)).hits
        found = {(h.connector_instance_id, h.stream, h.record_key, h.field) for h in hits}
        # One hit per record, in every mode: the payload's own record (two matching fields) and the shared one.
        assert {row[:3] for row in found} == {(payload, payload, payload), (payload, payload, "shared")}, payload
        assert len(found) == 2, payload

        # A record key shared by every source, scoped to one source's instance only.
        by_key = Scope(connector_instance_ids=(payload,), record_keys=("shared",))
        hits = search(db, SearchRequest("common shared note", mode=mode, k=25, scope=by_key, version_key=VERSION_KEY)).hits
        assert [(h.connector_instance_id, h.record_key) for h in hits] == [(payload, "shared")], payload
    for instance, stream in DELIMITER_TWINS:
        twin = Scope(connector_instance_ids=(instance,), streams=(stream,))
        hits = search(db, SearchRequest("delimiter twin", mode=mode, k=10, scope=twin, version_key=VERSION_KEY)).hits
        assert [(h.connector_instance_id, h.stream) for h in hits] == [(instance, stream)]
    assert snapshot(db) == before
    assert_canaries(db)


@pytest.mark.parametrize("mode", ["lexical", "semantic", "hybrid"])
def test_payloads_as_query_text_and_as_scope_values_run_as_values_only(injected, mode):
    db = injected["db"]
    before = snapshot(db)
    everything = Scope()
    many = Scope(connector_instance_ids=tuple(PAYLOADS[:12]), streams=tuple(PAYLOADS[:12]), fields=tuple(PAYLOADS[:12]) + ("body", "text"))
    for payload in PAYLOADS:
        for scope in (everything, many):
            request = SearchRequest(payload, mode=mode, k=10, scope=scope, version_key=VERSION_KEY)
            if mode == "lexical" and not parse_query(payload).searchable:  # punctuation only: a clear refusal
                with pytest.raises(InvalidInput, match="no word to search for"):
                    search(db, request)
                continue
            hits = search(db, request).hits
            if scope is many:
                assert all(h.connector_instance_id in PAYLOADS[:12] and h.stream == h.connector_instance_id for h in hits)
        # Scope values no source has, however they are spelt, match nothing at all.
        ghost = Scope(connector_instance_ids=(payload + "\u200b",), streams=(payload,))
        assert search(db, SearchRequest("common", mode=mode, k=10, scope=ghost, version_key=VERSION_KEY)).hits == []
    # A query made of a payload finds the record that holds it, when the payload has any words.
    hits = search(db, SearchRequest("'; DROP TABLE semindex.chunks; --", mode="lexical", k=100)).hits
    assert "'; DROP TABLE semindex.chunks; --" in {h.record_key for h in hits}
    assert snapshot(db) == before
    assert_canaries(db)


def test_version_keys_outside_the_pattern_are_refused_naming_the_key_and_change_nothing(db, tmp_path):
    raw_records.ingest_file(db, write_jsonl(tmp_path / "r.jsonl", payload_records()[:6]))
    chunks.sync_chunks(db, ChunkingParameters())
    create_canaries(db)
    accepted = []
    for payload in PAYLOADS + ["v1\n", "-leading-dash", "ok but spaced", "ok;", "ｏk"]:
        before = snapshot(db)
        if VERSION_KEY_PATTERN.fullmatch(payload):
            version = lifecycle.register_version(db, payload, "hashing-32", 32)
            assert version.version_key == payload
            accepted.append(version)
            continue
        with pytest.raises((ValueError, psycopg.errors.CheckViolation)) as refused:
            lifecycle.register_version(db, payload, "hashing-32", 32)
        # register_version names the key with repr(); PostgreSQL's CHECK detail line would clip it at 64 bytes.
        assert isinstance(refused.value, ValueError) and repr(payload) in str(refused.value), (payload, str(refused.value))
        assert before.changes(snapshot(db)) == NO_CHANGE, payload
        with pytest.raises(LookupError, match=re.escape(repr(payload))):
            search(db, SearchRequest("common", mode="semantic", version_key=payload))
    assert sorted(v.version_key for v in accepted) == ["MixedCase", "mixedcase", "semindex.chunks"]

    # Accepted odd keys flow through the backfill, the projection's JSON keys and search.
    for version in accepted:
        embeddings.backfill(db, version)
    retained_size.refresh_projection(db)
    for version in accepted:
        assert {row.embedded_counts[version.version_key] for row in retained_size.projection(db)} == {3}
        hits = search(db, SearchRequest("token00", mode="semantic", k=3, version_key=version.version_key,
                                        scope=Scope(connector_instance_ids=(PAYLOADS[0],)))).hits
        assert hits[0].record_key == PAYLOADS[0]
    assert_canaries(db)


# The stages that write SQL, with their checks; the retrieval evaluation and promotion after them
# judge relevance on judged query sets, which a payload corpus has none of.
SQL_STAGES = ("raw_records", "chunks", "embeddings", "vector_column", "hnsw_index", "lexical_index",
              "retained_size_projection", "partial_index_set")


def test_the_dagster_graph_survives_a_payload_corpus(db, database_url, tmp_path):
    create_canaries(db)
    version_key = "tiny.v1@inj-test_0"  # every character class the version-key pattern allows
    version = register_tiny_version(database_url, version_key, dimensions=32)
    before = snapshot(db)
    path = write_jsonl(tmp_path / "payloads.jsonl", payload_records() + BAD_LINES)
    run_config = raw_records_config(path)
    run_config["ops"]["partial_index_set"] = {"config": {"min_rows": 3, "max_share": 1.0, "max_sources": 100, "m": 8, "ef_construction": 32}}
    with dg.instance_for_test() as instance:
        result = materialize_graph(instance, database_url, version_key, run_config, selection=dg.AssetSelection.assets(*SQL_STAGES))
    assert result.success
    verdicts = check_verdicts(result)
    assert {"embedding_parity", "vector_indexes_valid", "hnsw_recall"} <= set(verdicts) and all(verdicts.values()), verdicts

    after = snapshot(db)
    changes = before.changes(after)
    assert changes["relations_removed"] == set() and changes["other"] <= {"triggers"}
    assert after.triggers - before.triggers <= {"semindex_hand_over_texts"}  # the version table's own
    assert {schema for schema, _, _ in changes["relations_added"]} == {"semindex"}
    partial_names = {partial_index_name(version, p, p) for p in PAYLOADS}
    assert partial_names <= {name for _, name, _ in changes["relations_added"]}
    assert sorted(managed_partial_indexes(db, version)) == sorted(partial_names)
    for i, payload in enumerate(PAYLOADS):
        pinned = Scope((payload,), (payload,), (payload,), (payload,))
        hits = search(db, SearchRequest(f"token{i:02d}", mode="hybrid", k=10, scope=pinned, version_key=version_key)).hits
        assert [(h.connector_instance_id, h.stream, h.record_key, h.field) for h in hits] == [(payload,) * 4], payload
    assert_canaries(db)


def test_the_blob_migration_and_its_search_take_payload_names_and_values_as_data(db):
    """The adopted-table path builds DDL from the table and column names it is given or finds:
    payload-named tables and columns are migrated and searched, and scope keys and record keys are
    values only."""
    import json

    import numpy as np

    from semindex import semantic_blob

    create_canaries(db)
    rng = np.random.default_rng(3)
    names = [payload for payload in PAYLOADS if "." not in payload and 0 < len(payload.encode()) <= 40 and "\x00" not in payload]
    assert len(names) >= 8 and any("%" in name for name in names)
    for number, payload in enumerate(names):
        table = sql.Identifier("public", f"{payload}{number}")
        column = sql.Identifier(f"emb {payload}")
        rows = {}
        with db.connection() as conn:
            # Statements without parameters and COPY: these names may hold a %, which psycopg would
            # otherwise read as a placeholder.
            conn.execute(sql.SQL(
                "CREATE TABLE {} (connector_id text NOT NULL, connector_instance_id text NOT NULL, scope_key text NOT NULL, "
                "record_key text NOT NULL, {} jsonb, PRIMARY KEY (connector_instance_id, scope_key, record_key))"
            ).format(table, column))
            with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(table)) as copy:
                for row in range(30):
                    vector = rng.standard_normal(8)
                    vector /= np.linalg.norm(vector)
                    key = (payload, json.dumps([payload, "f"]), f"{payload}-{row}")
                    rows[key] = vector
                    copy.write_row(("c", *key, json.dumps(vector.round(7).tolist())))
        if "%" in payload:
            # Such a name is refused, naming it, before any statement runs with it.
            before = snapshot(db)
            with pytest.raises(ValueError, match="contains '%'"):
                semantic_blob.migrate(db, table=f"public.{payload}{number}", dimensions=8)
            assert before.changes(snapshot(db)) == NO_CHANGE
            continue
        qualified = f"public.{payload}{number}"
        before = snapshot(db)
        report = semantic_blob.migrate(db, table=qualified, dimensions=8, batch_size=7)
        assert report.status == "migrated" and report.rows == 30, (payload, report)
        changes = before.changes(snapshot(db))
        assert changes["relations_removed"] == set(), payload
        assert semantic_blob.migrate(db, table=qualified, dimensions=8).status == "already migrated"

        query = rng.standard_normal(8)
        query /= np.linalg.norm(query)
        wanted = [key for key in rows if key[2].endswith(("-1", "-2", "-3"))]
        hits = semantic_blob.search_blob(db, query, k=3, connector_instance_id=payload, table=qualified,
                                         scope_keys=[json.dumps([payload, "f"])], record_keys=[k[2] for k in wanted])
        expected = sorted(wanted, key=lambda k: (1 - float(rows[k] @ query), k[2]))
        assert [hit[0] for hit in hits] == [k[2] for k in expected], payload
        # A scope key or record key that merely contains the payload's quoting matches nothing.
        assert semantic_blob.search_blob(db, query, k=3, connector_instance_id=payload + "'", table=qualified) == []
    assert_canaries(db)
