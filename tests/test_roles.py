"""Database roles on a real PostgreSQL, with the grants of sql/roles.sql (the README's SQL): the
pipeline runs as a writer that owns the semindex schema, search runs as a reader that can only
read, and version tables the writer creates later are readable through default privileges.

PUBLIC's privileges on the database and on schema public are revoked first, so every privilege
either role uses is one these grants gave it. The embedded server trusts local connections, so the
passwords are set but not checked here.
"""

from __future__ import annotations

import contextlib
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from semindex import chunks, embeddings, indexes, raw_records, retained_size
from semindex.chunking import ChunkingParameters
from semindex.database import Database, sqlalchemy_psycopg2_url
from semindex.partial_indexes import HotSourceBand, managed_partial_indexes, sync_partial_indexes
from semindex.search import PlannerSettings, Scope, Searcher, SearchRequest
from semindex.sql_files import statement
from semindex import lifecycle
from semindex.vectors.version import get_version
from tests.conftest import _database_url, sample_records, write_jsonl
from tests.dagster_helpers import check_verdicts, materialize_graph, raw_records_config, register_tiny_version
from tests.test_sql_injection import SQL_STAGES, snapshot

VERSION_KEY = "tiny"
PASSWORD = "correct horse 'battery' staple"  # a literal in CREATE ROLE: quotes must survive


def role_url(url: str, role: str, password: str = PASSWORD) -> str:
    """`url` logging in as `role`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{quote(role, safe='')}:{quote(password, safe='')}@{parts.hostname or ''}"))


@contextlib.contextmanager
def database_roles(server_url: str):
    """A writer and a reader with fresh names (roles are per server); dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    writer, reader = f"semindex_writer_{suffix}", f"semindex_reader_{suffix}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(statement("roles", "create_writer", writer=writer, password=sql.Literal(PASSWORD)))
        admin.execute(statement("roles", "create_reader", reader=reader, password=sql.Literal(PASSWORD)))
    try:
        yield writer, reader
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}, {}").format(sql.Identifier(writer), sql.Identifier(reader)))


@contextlib.contextmanager
def fresh_database(server_url: str):
    name = f"roles_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name, _database_url(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def grant(admin_url: str, database: str, writer: str, reader: str) -> None:
    """What the README tells an administrator to run: extensions, hardening, both roles' grants."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        for extension in ("vector", "btree_gin", "pg_trgm"):
            admin.execute(statement("extensions", f"create_{extension}"))
        admin.execute(statement("roles", "revoke_public", database=database))
        admin.execute(statement("roles", "grant_writer", database=database, writer=writer))
        admin.execute(statement("roles", "grant_reader", database=database, writer=writer, reader=reader))


def forget(url: str) -> None:
    """Close the process-wide pool open_database (and so Dagster's resource) keeps for `url`."""
    from semindex import database as database_module

    opened = database_module._open_databases.pop(url, None)
    if opened:
        opened.close()


@pytest.fixture(scope="module")
def deployment(server_url, tmp_path_factory):
    """A fresh database: the administrator's grants, then the graph materialized as the writer,
    which bootstraps the schema itself."""
    with contextlib.ExitStack() as stack:
        writer, reader = stack.enter_context(database_roles(server_url))
        database, admin_url = stack.enter_context(fresh_database(server_url))
        writer_url, reader_url = role_url(admin_url, writer), role_url(admin_url, reader)
        stack.callback(forget, writer_url)
        grant(admin_url, database, writer, reader)

        register_tiny_version(writer_url, VERSION_KEY, dimensions=32)
        path = write_jsonl(tmp_path_factory.mktemp("roles") / "corpus.jsonl", sample_records(per_stream=10))
        run_config = raw_records_config(path)
        # The two largest sources get partial indexes, so the reader walks those too.
        run_config["ops"]["partial_index_set"] = {"config": {"min_rows": 1, "max_share": 1.0, "max_sources": 2}}
        with dg.instance_for_test() as instance:
            result = materialize_graph(instance, writer_url, VERSION_KEY, run_config, selection=dg.AssetSelection.assets(*SQL_STAGES))
        assert result.success and all(check_verdicts(result).values())

        reader_db = Database(reader_url, bootstrap=False)
        stack.callback(reader_db.close)
        admin_db = Database(admin_url, bootstrap=False)
        stack.callback(admin_db.close)
        yield {"writer": writer, "reader": reader, "writer_url": writer_url, "reader_url": reader_url,
               "reader_db": reader_db, "admin_db": admin_db, "database": database}


def _hot_source(db, version_key: str) -> Scope:
    """A scope of one of the version's hot sources alone: its partial graph's path."""
    with db.connection() as conn:
        instance, stream = conn.execute(
            "SELECT h.connector_instance_id, h.stream FROM semindex.partial_hnsw_indexes AS h "
            "JOIN semindex.embedding_versions AS v USING (version_id) WHERE v.version_key = %s "
            "ORDER BY 1, 2 LIMIT 1", (version_key,)).fetchone()
    return Scope(connector_instance_ids=(instance,), streams=(stream,))


def _requests(version_key: str, hot: Scope) -> list[SearchRequest]:
    scopes = [
        Scope(),
        Scope(connector_instance_ids=("bbc",)),
        Scope(connector_instance_ids=("bbc", "chitchat-main"), fields=("body", "text")),
        Scope(record_keys=("sport/001", "tech/002")),
        hot,
    ]
    return [
        SearchRequest(query, mode=mode, k=10, scope=scope, version_key=version_key)
        for query in ("the", "and")  # common enough that every scope has lexical matches
        for mode in ("lexical", "semantic", "hybrid")
        for scope in scopes
    ]


def _answers(searcher: Searcher, requests) -> tuple[list, set]:
    answers, plans = [], set()
    for request in requests:
        response = searcher.search(request)
        answers.append([hit.as_dict() for hit in response.hits])
        plans |= set(response.meta.semantic_plans.values())
    return answers, plans


def test_the_reader_searches_every_mode_and_path_and_writes_nothing(deployment):
    from semindex.database import open_database

    # Low thresholds so the reader's queries take the partial, ann and global paths, not only exact.
    planner = PlannerSettings(exact_threshold=10, min_ann_share=0.0)
    before = snapshot(deployment["admin_db"])
    requests = _requests(VERSION_KEY, _hot_source(deployment["admin_db"], VERSION_KEY))
    as_reader, plans = _answers(Searcher(deployment["reader_db"], planner=planner), requests)
    assert snapshot(deployment["admin_db"]) == before
    assert {"exact", "partial", "global_ann"} <= plans and plans & {"ann", "ann->exact"}, plans
    assert all(as_reader)  # every request found something
    # The same answers the writer gets.
    as_writer, _ = _answers(Searcher(open_database(deployment["writer_url"]), planner=planner), requests)
    assert as_reader == as_writer


FORBIDDEN = [
    "INSERT INTO semindex.raw_records (connector_id, connector_instance_id, stream, record_key, fields, updated_at, content_sha256) "
    "VALUES ('c', 'i', 's', 'k', '{}', now(), '\\x00')",
    "UPDATE semindex.embedding_versions SET state = 'retired'",
    "DELETE FROM semindex.chunks",
    "TRUNCATE semindex.retained_size_projection",
    "INSERT INTO semindex.chunk_vectors_v1 SELECT * FROM semindex.chunk_vectors_v1 LIMIT 1",
    "DELETE FROM semindex.chunk_vectors_v1",
    "SELECT 1 FROM semindex.retained_size_projection FOR UPDATE",
    "CREATE TABLE semindex.reader_table (a int)",
    "CREATE INDEX reader_index ON semindex.chunks (record_key)",
    "ALTER TABLE semindex.chunks ADD COLUMN reader_column int",
    "DROP TABLE semindex.quarantined_records",
    "DROP INDEX semindex.chunk_vectors_v1_hnsw",
    "CREATE TABLE public.reader_table (a int)",
    "CREATE TEMP TABLE reader_temp (a int)",
    "CREATE SCHEMA reader_schema",
]


@pytest.mark.parametrize("forbidden", FORBIDDEN)
def test_the_reader_cannot_write(deployment, forbidden):
    with psycopg.connect(deployment["reader_url"]) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(forbidden)


def test_everything_in_the_schema_is_owned_by_the_writer(deployment):
    with deployment["admin_db"].connection() as conn:
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'semindex' UNION SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'semindex'"
        ).fetchall()
    assert owners == [(deployment["writer"],)]


def test_a_version_the_writer_adds_after_the_grants_is_searchable_by_the_reader(deployment):
    writer_db = Database(deployment["writer_url"])
    try:
        version = lifecycle.register_version(writer_db, "tiny-48", "hashing-48", 48)
        embeddings.backfill(writer_db, version)
        indexes.build_hnsw(writer_db, version, indexes.HnswParameters(m=8, ef_construction=32))
        retained_size.refresh_projection(writer_db)
        band = HotSourceBand(min_rows=1, max_share=1.0, max_sources=1)
        sync_partial_indexes(writer_db, version, band, indexes.HnswParameters(m=8, ef_construction=32))
        assert len(managed_partial_indexes(writer_db, version)) == 1
    finally:
        writer_db.close()
    planner = PlannerSettings(exact_threshold=10, min_ann_share=0.0)
    requests = _requests("tiny-48", _hot_source(deployment["admin_db"], "tiny-48"))
    answers, plans = _answers(Searcher(deployment["reader_db"], planner=planner), requests)
    # The hot source holds fewer rows than a page asks for: its walk returns them all, and only an
    # exact scan can tell that no more match ("partial->exact").
    assert all(answers) and {"exact", "global_ann"} <= plans and plans & {"partial", "partial->exact"}, plans
    with deployment["admin_db"].connection() as conn:
        rights = conn.execute(
            "SELECT has_table_privilege(%s, %s, 'SELECT'), has_table_privilege(%s, %s, 'INSERT')",
            (deployment["reader"], version.vectors_table, deployment["reader"], version.vectors_table),
        ).fetchone()
    assert rights == (True, False)


def test_the_writer_keeps_dagster_storage_in_the_same_database(deployment):
    from dagster_postgres import DagsterPostgresStorage

    storage = DagsterPostgresStorage(sqlalchemy_psycopg2_url(deployment["writer_url"]))
    try:
        assert storage.run_storage.get_runs() == []
    finally:
        for part in (storage.run_storage, storage.event_log_storage, storage.schedule_storage):
            part.dispose()
    with deployment["admin_db"].connection() as conn:
        owners = {row[0] for row in conn.execute(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
        )}
    assert owners == {deployment["writer"]}


def test_the_http_service_runs_as_the_reader_and_no_route_writes(deployment, tmp_path):
    from semindex.access import Grant, create_token
    from semindex.database import open_database
    from tests.http_service import running_service
    from tests.serving import serve

    writer_db = open_database(deployment["writer_url"])
    if lifecycle.serving_facts(writer_db) is None:
        serve(writer_db, VERSION_KEY)  # the service searches the serving version
    owner, _ = create_token(writer_db, "roles owner")
    client_token, _ = create_token(writer_db, "roles client", grant=Grant(streams=("sport",)))
    before = snapshot(deployment["admin_db"])
    with running_service(deployment["reader_url"], tmp_path / "home") as service:
        with service.client(owner) as client:
            for route in ("/v1/search", "/v1/search/semantic", "/v1/search/hybrid"):
                body = client.get(route, params={"q": "the", "limit": 5}).json()
                assert len(body["data"]) == 5, body
                if body.get("next_cursor"):
                    assert client.get(route, params={"q": "the", "limit": 5, "cursor": body["next_cursor"]}).status_code == 200
                for method in ("POST", "PUT", "PATCH", "DELETE"):
                    assert client.request(method, route, params={"q": "the"}).status_code == 405
            assert client.post("/v1/query", json={"q": "the", "mode": "hybrid", "version": VERSION_KEY}).status_code == 200
            for path in ("/", "/livez", "/readyz", "/metrics", "/docs", "/openapi.json", "/.well-known/oauth-protected-resource"):
                assert client.get(path).status_code == 200, path
        with service.client(client_token) as client:
            assert {h["stream"] for h in client.get("/v1/search", params={"q": "the"}).json()["data"]} == {"sport"}
        assert "permission denied" not in service.log()
    assert snapshot(deployment["admin_db"]) == before  # nothing any route did wrote a row


def test_the_search_command_runs_as_the_reader(deployment, monkeypatch, capsys):
    from semindex_app.cli import main

    monkeypatch.setenv("DATABASE_URL", deployment["reader_url"])
    try:
        assert main(["search", "football match result", "--version", VERSION_KEY, "--k", "3"]) == 0
    finally:
        forget(deployment["reader_url"])
    assert "bbc" in capsys.readouterr().out


def test_a_database_bootstrapped_by_a_superuser_is_handed_over_to_the_writer(server_url, tmp_path):
    records = sample_records(per_stream=4)
    with contextlib.ExitStack() as stack:
        writer, reader = stack.enter_context(database_roles(server_url))
        database, admin_url = stack.enter_context(fresh_database(server_url))
        # Everything so far was created by the superuser.
        admin_db = stack.enter_context(contextlib.closing(Database(admin_url)))
        raw_records.ingest_file(admin_db, write_jsonl(tmp_path / "a.jsonl", records[::2]))
        chunks.sync_chunks(admin_db, ChunkingParameters())
        embeddings.backfill(admin_db, lifecycle.register_version(admin_db, VERSION_KEY, "hashing-32", 32))

        grant(admin_url, database, writer, reader)
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute("SELECT set_config('semindex.writer', %s, false)", (writer,))
            admin.execute(statement("roles", "hand_over_tables"))
        before = snapshot(admin_db)

        writer_db = stack.enter_context(contextlib.closing(Database(role_url(admin_url, writer))))
        raw_records.ingest_file(writer_db, write_jsonl(tmp_path / "b.jsonl", records[1::2]))
        chunks.sync_chunks(writer_db, ChunkingParameters())
        version = get_version(writer_db, VERSION_KEY)
        embeddings.backfill(writer_db, version)
        indexes.build_hnsw(writer_db, version, indexes.HnswParameters(m=8, ef_construction=32))
        indexes.build_lexical_index(writer_db)
        retained_size.refresh_projection(writer_db)
        changes = before.changes(snapshot(admin_db))
        assert changes["relations_removed"] == set() and changes["other"] == set()
        assert changes["relations_added"] == {("semindex", version.hnsw_index_name, "i"), ("semindex", indexes.LEXICAL_INDEX_NAME, "i"),
                                              ("semindex", f"{version.table_name}_record_key", "i"),
                                              ("semindex", "lexical_documents_record_key", "i")}

        reader_db = stack.enter_context(contextlib.closing(Database(role_url(admin_url, reader), bootstrap=False)))
        # A record the writer ingested, into tables the superuser created.
        late = next(record for record in records[1::2] if "headline" in record["fields"])
        for mode in ("lexical", "semantic", "hybrid"):
            hits = Searcher(reader_db).search(SearchRequest(
                late["fields"]["headline"], mode=mode, k=5, version_key=VERSION_KEY,
                scope=Scope(connector_instance_ids=(late["connector_instance_id"],), record_keys=(late["record_key"],)),
            )).hits
            assert hits and {hit.record_key for hit in hits} == {late["record_key"]}, mode
        with psycopg.connect(role_url(admin_url, reader)) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM semindex.raw_records")
