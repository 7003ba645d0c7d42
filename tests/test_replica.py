"""Search on a read replica: a primary and a streaming hot standby (pg_basebackup -R, from the
embedded PostgreSQL's own binaries, on loopback). The pipeline runs on the primary; every search
mode and semantic plan (exact, HNSW, partial index, fan-out, zvec) runs on the standby, through the
library, `semindex search` and `semindex serve`, and answers as the primary does; records ingested
on the primary are found on the standby once it has replayed them; a write the search side
attempts there fails loudly, and the best-effort ones (shadow observations) are skipped, said once."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from contextlib import ExitStack

import psycopg
import pytest

from semindex import chunks, embeddings, indexes, lifecycle, raw_records, retained_size
from semindex.access import create_token, revoke_token
from semindex.ann_substrate import builder
from semindex.ann_substrate.recall import substrate_recall
from semindex.chunking import ChunkingParameters
from semindex.database import ReadOnlyDatabase, open_database
from semindex.partial_indexes import HotSourceBand, sync_partial_indexes
from semindex.search import PlannerSettings, Scope, Searcher, SearchRequest, zvec_engine
from semindex.shadow_traffic import ShadowMirror, ShadowSettings
from semindex.vectors.version import get_version
from tests.conftest import sample_records, write_jsonl
from tests.http_service import free_port, running_service
from tests.replication import start_primary, start_standby, wait_for_replay
from tests.serving import serve

SERVING = "hash-64"  # pgvector, with a partial index on the hottest source
ZVEC = "zvec-64"  # zvec generations beside PostgreSQL
EXACT = PlannerSettings()  # the sample's sources are all under the exact threshold
GRAPH = PlannerSettings(exact_threshold=0, min_ann_share=0.0)  # every source walks a graph
FRESH_WORD = "quokkamarmalade"


def _index(db, folder) -> None:
    """The pipeline's stages, as the tests run them cheaply (a tiny hashing encoder)."""
    raw_records.ingest_file(db, write_jsonl(folder / "records.jsonl", sample_records(per_stream=10)))
    chunks.sync_chunks(db, ChunkingParameters())
    for key, engine in ((SERVING, "pgvector"), (ZVEC, "zvec")):
        version = lifecycle.register_version(db, key, "hashing-64", 64, ann_engine=engine)
        embeddings.backfill(db, version)
        indexes.build_hnsw(db, version, indexes.HnswParameters())
    zvec_version = get_version(db, ZVEC)
    assert builder.build(db, zvec_version).generation == 1
    assert substrate_recall(db, zvec_version).passed
    indexes.build_lexical_index(db)
    retained_size.refresh_projection(db)
    # The hottest source (bbc/tech) gets a partial graph of its own.
    report = sync_partial_indexes(db, get_version(db, SERVING), HotSourceBand(min_rows=1, max_share=1.0, max_sources=1),
                                  indexes.HnswParameters())
    assert len(report.created) == 1
    serve(db, SERVING)


@pytest.fixture(scope="module")
def replication(semindex_home, tmp_path_factory):
    folder = tmp_path_factory.mktemp("replication")
    os.environ["SEMINDEX_ZVEC_HOME"] = str(folder / "zvec")  # the builder's, which the standby's searches share
    primary = start_primary(folder, free_port())
    clusters = [primary]
    try:
        with psycopg.connect(primary.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE semindex")
        # The standby first: everything the pipeline writes reaches it by streaming replication.
        standby = start_standby(primary, folder, free_port())
        clusters.append(standby)
        primary_url, standby_url = primary.url("semindex"), standby.url("semindex")
        primary_db = open_database(primary_url)
        _index(primary_db, folder)
        token = create_token(primary_db, "replica test owner")[0]
        wait_for_replay(primary_url, standby_url)
        # As `semindex search` and `semindex serve` open it: no bootstrap, search only reads.
        standby_db = open_database(standby_url, bootstrap=False)
        yield {"folder": folder, "primary": primary_db, "standby": standby_db, "primary_url": primary_url,
               "standby_url": standby_url, "token": token}
    finally:
        from semindex import database as database_module

        for cluster in reversed(clusters):  # the standby first
            opened = database_module._open_databases.pop(cluster.url("semindex"), None)
            if opened:
                opened.close()
            cluster.stop()
        os.environ.pop("SEMINDEX_ZVEC_HOME", None)
        zvec_engine.HANDLES.close_all()


def _answer(db, planner: PlannerSettings, request: SearchRequest):
    # zvec handles are per process and version id, which both servers share here: forgotten, so each
    # server's answer opens the generation its own ann_generations row names.
    zvec_engine.HANDLES.close_all()
    response = Searcher(db, planner=planner).search(request)
    return [hit.as_dict() for hit in response.hits], response.meta


CASES = {
    # mode, planner, scope, version, the plans expected per source ({} for lexical)
    "lexical": ("lexical", EXACT, Scope(), SERVING, {}),
    "lexical fan-out": ("lexical", EXACT, Scope(connector_instance_ids=("bbc",), streams=("tech", "sport", "politics")), SERVING, {}),
    "exact fan-out": ("semantic", EXACT, Scope(connector_instance_ids=("bbc",)), SERVING,
                      {f"bbc/{s}": "exact" for s in ("business", "entertainment", "politics", "sport", "tech")}),
    "hnsw global": ("semantic", GRAPH, Scope(), SERVING, {"*": "global_ann"}),
    "hnsw filtered": ("semantic", GRAPH, Scope(streams=("messages", "conversations")), SERVING,
                      {"chitchat-main/messages": "ann", "chitchat-threads/conversations": "ann"}),
    "partial index": ("semantic", GRAPH, Scope(streams=("tech",)), SERVING, {"bbc/tech": "partial"}),
    # the hot source joins the walk of the version's graph that the other takes
    "partial joins the hnsw walk": ("semantic", GRAPH, Scope(streams=("tech", "sport")), SERVING,
                                    {"bbc/tech": "ann", "bbc/sport": "ann"}),
    "zvec": ("semantic", GRAPH, Scope(), ZVEC, {"*": "zvec"}),
    "zvec filtered": ("semantic", GRAPH, Scope(streams=("messages", "conversations")), ZVEC,
                      {"chitchat-main/messages": "zvec", "chitchat-threads/conversations": "zvec"}),
    "hybrid": ("hybrid", EXACT, Scope(connector_instance_ids=("bbc",)), SERVING, None),
    "hybrid on graphs": ("hybrid", GRAPH, Scope(), SERVING, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_mode_and_plan_answers_on_the_standby_as_on_the_primary(replication, case):
    mode, planner, scope, version, plans = CASES[case]
    for query in ("the government said", "football match results"):
        # k=5: a walk asks for 25 rows, which the sample's small sources hold (a short walk would be
        # answered exactly, and the plan under test would not be the one that answered). Hybrid
        # ranks each side MAX_K deep, so its graph walks are answered exactly (planned the same).
        request = SearchRequest(query, mode=mode, k=5, scope=scope, version_key=version)
        on_primary, primary_meta = _answer(replication["primary"], planner, request)
        on_standby, standby_meta = _answer(replication["standby"], planner, request)
        assert on_standby
        assert on_standby == on_primary  # the same hits, scores and snippets, in the same order
        assert standby_meta.semantic_plans == primary_meta.semantic_plans
        assert standby_meta.lexical == primary_meta.lexical
        if plans is not None:
            assert standby_meta.semantic_plans == plans
    if case == "lexical fan-out":
        assert standby_meta.lexical.sources_searched == 3
    chunks_request = SearchRequest("football match results", mode=mode, k=5, scope=scope, version_key=version, unit="chunks")
    assert _answer(replication["standby"], planner, chunks_request)[0] == _answer(replication["primary"], planner, chunks_request)[0]


def test_the_standby_is_detected_and_a_write_there_fails_saying_so(replication):
    primary, standby = replication["primary"], replication["standby"]
    assert primary.read_only_reason() == "" and standby.read_only_reason() == "a hot standby"
    # A write that matters (a token, what `semindex tokens create` does) is refused, plainly.
    with pytest.raises(ReadOnlyDatabase, match=r"refuses writes: it is a hot standby\. .*run it against the primary") as refused:
        create_token(standby, "written on a replica")
    assert isinstance(refused.value, psycopg.errors.ReadOnlySqlTransaction)
    assert "read-only transaction" in str(refused.value)
    # Opening it as the writers do (bootstrap: CREATE EXTENSION ... IF NOT EXISTS) is refused alike.
    with pytest.raises(ReadOnlyDatabase, match="hot standby"):
        from semindex.database import Database

        Database(replication["standby_url"], bootstrap=True)


def test_shadow_observations_pointed_at_the_standby_are_skipped_and_said_once(replication, caplog):
    standby = replication["standby"]
    searcher = Searcher(standby)
    events = []
    mirror = ShadowMirror(lambda request: searcher.search(request).hits, standby, standby, ShadowSettings(sample_rate=1.0),
                          on_event=events.append)
    try:
        with caplog.at_level(logging.ERROR, logger="semindex.shadow_traffic"):
            for query in ("budget", "election", "music"):
                assert mirror.offer(SearchRequest(query, mode="semantic", k=10), [], SERVING)
            mirror.join()
    finally:
        mirror.close()
    assert events == ["queued"] * 3 + ["read_only"] * 3
    said = [record.getMessage() for record in caplog.records if "shadow traffic is not recorded" in record.getMessage()]
    assert len(said) == 1 and "a hot standby" in said[0] and "SEMINDEX_SHADOW_DATABASE_URL" in said[0]


def test_zvec_without_its_files_on_the_replica_host_steps_aside_to_pgvector(replication, tmp_path, monkeypatch, caplog):
    """A replica on another host: no generation files under its SEMINDEX_ZVEC_HOME."""
    monkeypatch.setenv("SEMINDEX_ZVEC_HOME", str(tmp_path / "elsewhere"))
    zvec_engine.HANDLES.close_all()  # forget the handle the shared folder gave
    request = SearchRequest("the government said", mode="semantic", k=10, version_key=ZVEC)
    try:
        with caplog.at_level(logging.WARNING, logger="semindex.search.zvec_engine"):
            on_standby, meta = _answer(replication["standby"], GRAPH, request)
            _answer(replication["standby"], GRAPH, request)
    finally:
        zvec_engine.HANDLES.close_all()
    assert meta.semantic_plans == {"*": "zvec(g1's files are not readable on this host)->global_ann"}
    pgvector_request = SearchRequest("the government said", mode="semantic", k=10, version_key=SERVING)
    reference = _answer(replication["primary"], GRAPH, pgvector_request)[0]
    assert [(h["record_key"], h["chunk_no"], h["scores"]) for h in on_standby] == \
        [(h["record_key"], h["chunk_no"], h["scores"]) for h in reference]  # the same vectors, the same walk
    warned = [record.getMessage() for record in caplog.records if "steps aside to pgvector" in record.getMessage()]
    assert len(warned) == 1 and ZVEC in warned[0]  # once per generation, not per query


def _body(response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    body.pop("next_cursor", None)
    body.get("meta", {}).pop("timings_ms", None)
    return body


HTTP = [
    ("GET", "/v1/search", {"q": "the government said", "limit": 10}),
    ("GET", "/v1/search/semantic", {"q": "football match results", "limit": 10}),
    ("GET", "/v1/search/hybrid", {"q": "the government said", "limit": 10, "streams": "politics"}),
    ("POST", "/v1/query", {"q": "football match results", "mode": "semantic", "k": 10, "version": ZVEC}),
    ("POST", "/v1/query", {"q": "the government said", "mode": "hybrid", "k": 10, "streams": ["tech", "sport"]}),
]


@pytest.fixture(scope="module")
def services(replication):
    """`semindex serve` on the primary and on the standby (its shadow traffic pointed, wrongly, at
    the standby too: it must still serve)."""
    folder = replication["folder"]
    with ExitStack() as stack:
        primary = stack.enter_context(running_service(replication["primary_url"], folder / "serve-primary"))
        standby = stack.enter_context(running_service(
            replication["standby_url"], folder / "serve-standby",
            extra_env={"SEMINDEX_SHADOW_DATABASE_URL": replication["standby_url"], "SEMINDEX_SHADOW_SAMPLE_RATE": "1"}))
        yield {"primary": primary, "standby": standby}


def _call(client, method: str, path: str, params: dict):
    return client.get(path, params=params) if method == "GET" else client.post(path, json=params)


def test_serve_on_the_standby_answers_every_route_as_on_the_primary(replication, services):
    token = replication["token"]  # created on the primary, replicated
    with services["primary"].client(token) as primary, services["standby"].client(token) as standby:
        for method, path, params in HTTP:
            theirs, ours = _body(_call(primary, method, path, params)), _body(_call(standby, method, path, params))
            assert ours == theirs, (path, params)
            assert len(ours.get("data", ours.get("hits"))) == 10
        # A cursor's next page, served from the standby's own snapshot.
        first = standby.get("/v1/search", params={"q": "the", "limit": 5}).json()
        assert first["has_more"]
        second = standby.get("/v1/search", params={"q": "the", "limit": 5, "cursor": first["next_cursor"]})
        assert second.status_code == 200 and len(second.json()["data"]) == 5
        assert standby.get("/readyz").json()["checks"]["serving_version"] == SERVING
    # Tokens are written on the primary and looked up (read only) on the standby: a revocation holds
    # there once it has replayed.
    client_token, row = create_token(replication["primary"], "revoked on the primary")
    wait_for_replay(replication["primary_url"], replication["standby_url"])
    with services["standby"].client(client_token) as client:
        assert client.get("/v1/search", params={"q": "government"}).status_code == 200
        revoke_token(replication["primary"], row.token_id)
        wait_for_replay(replication["primary_url"], replication["standby_url"])
        refused = client.get("/v1/search", params={"q": "government"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "grant_revoked"
    # The mirror drains after the answers: its one error line comes shortly after.
    deadline = time.monotonic() + 10
    while "shadow traffic is not recorded" not in services["standby"].log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = services["standby"].log()
    assert "shadow traffic is not recorded" in log and log.count("shadow traffic is not recorded") == 1
    assert "the database is a hot standby" in log and "Traceback" not in log


def test_records_ingested_on_the_primary_are_searchable_on_the_standby_after_replay(replication, services):
    primary, standby = replication["primary"], replication["standby"]
    fresh = [{"connector_id": "chitchat", "connector_instance_id": "chitchat-main", "stream": "messages",
              "record_key": f"fresh-{n}", "updated_at": f"2024-01-0{n + 1}T00:00:00Z",
              "fields": {"sender": "replica-test", "text": f"the {FRESH_WORD} arrived on day {n}"}} for n in range(3)]
    request = SearchRequest(FRESH_WORD, mode="lexical", k=10)
    assert _answer(standby, EXACT, request)[0] == []
    raw_records.ingest_file(primary, write_jsonl(replication["folder"] / "fresh.jsonl", fresh))
    chunks.sync_chunks(primary, ChunkingParameters())
    for key in (SERVING, ZVEC):
        embeddings.backfill(primary, get_version(primary, key))
    retained_size.refresh_projection(primary)
    wait_for_replay(replication["primary_url"], replication["standby_url"])

    expected = {f"fresh-{n}" for n in range(3)}
    assert {hit["record_key"] for hit in _answer(standby, EXACT, request)[0]} == expected
    for version, planner, plans in ((SERVING, EXACT, None), (SERVING, GRAPH, {"*": "global_ann"}), (ZVEC, GRAPH, {"*": "zvec"})):
        # The hashing encoder maps a text to itself: a fresh record's own text is its nearest.
        semantic = SearchRequest(fresh[0]["fields"]["text"], mode="semantic", k=3, version_key=version)
        hits, meta = _answer(standby, planner, semantic)
        assert hits[0]["record_key"] == "fresh-0" and hits[0]["scores"]["distance"] < 1e-6, (version, meta.semantic_plans)
        if plans is not None:
            assert meta.semantic_plans == plans  # zvec finds it through the replicated delta, no rebuild
    with services["standby"].client(replication["token"]) as client:
        body = client.get("/v1/search/hybrid", params={"q": FRESH_WORD, "limit": 10}).json()
        assert {hit["record_key"] for hit in body["data"]} >= expected
    # `semindex search` pointed at the replica by DATABASE_URL, as a user runs it.
    result = subprocess.run([sys.executable, "-m", "semindex_app.cli", "search", FRESH_WORD, "--mode", "lexical", "--json"],
                            check=False, env={**os.environ, "DATABASE_URL": replication["standby_url"]}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert {hit["record_key"] for hit in json.loads(result.stdout)["hits"]} == expected

