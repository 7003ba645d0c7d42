"""`semindex serve` over loopback, as a client uses it: the reference-compatible routes and their
parameter rules, warnings and error codes, the native route, auth, grants (a property test over
random grants and queries, cursors included), cursors, limits, operations routes, the injection
corpus, and a service that keeps answering while the pipeline writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semindex import chunks, embeddings, raw_records, retained_size
from semindex.access import Grant, create_token, list_tokens, revoke_token
from semindex.chunking import ChunkingParameters
from semindex.search import Scope, Searcher, SearchRequest
from semindex.vectors.version import get_version
from tests.conftest import sample_records, write_jsonl
from tests.http_service import (
    VERSION_KEY,
    drop_database,
    grant_token,
    indexed_database,
    owner_token,
    running_service,
)
from tests.test_sql_injection import PAYLOADS, snapshot

ROUTES = {"lexical": "/v1/search", "semantic": "/v1/search/semantic", "hybrid": "/v1/search/hybrid"}
REJECTED = ["vector", "embedding", "embed", "model", "model_id", "rank", "boost", "weights", "blend",
            "connector_id", "fields", "expand", "order", "sort", "mode"]
BBC_START = datetime(2019, 1, 1, tzinfo=timezone.utc)


def corpus() -> list[dict]:
    """The sample's first 10 records of each stream; the BBC ones (which share one date in the
    sample) spread over 50 days, so time-range grants cut through sources."""
    records = sample_records(per_stream=10)
    for number, record in enumerate(r for r in records if r["connector_instance_id"] == "bbc"):
        record["updated_at"] = (BBC_START + timedelta(days=number)).isoformat()
    return records


RECORDS = corpus()
BY_KEY = {(r["connector_instance_id"], r["stream"], r["record_key"]): r for r in RECORDS}


@pytest.fixture(scope="module")
def deployment(server_url, tmp_path_factory):
    folder = tmp_path_factory.mktemp("http")
    url, db = indexed_database(server_url, folder, records=RECORDS)
    snapshots = folder / "snapshots"
    with running_service(url, folder / "home", extra_env={"SEMINDEX_SNAPSHOT_DIR": str(snapshots)}) as service:
        yield {"url": url, "db": db, "service": service, "owner": owner_token(db), "snapshots": snapshots}
    drop_database(server_url, url)


@pytest.fixture(scope="module")
def owner(deployment):
    with deployment["service"].client(deployment["owner"]) as client:
        yield client


def _error(response: httpx.Response, status: int, code: str, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["request_id"] == response.headers["x-request-id"]
    if param is not None:
        assert error["param"] == param, error
    assert "Traceback" not in response.text
    return error


# ---- the compatible routes -----------------------------------------------------------------------

@pytest.mark.parametrize("mode", list(ROUTES))
def test_each_route_answers_the_list_envelope_with_typed_lower_is_better_scores(owner, mode):
    body = owner.get(ROUTES[mode], params={"q": "the government said", "limit": 10}).json()
    assert body["object"] == "list" and body["url"] == ROUTES[mode] and isinstance(body["has_more"], bool)
    hits = body["data"]
    assert len(hits) == 10
    assert len({(h["connection_id"], h["stream"], h["record_key"]) for h in hits}) == 10  # one hit per record
    for hit in hits:
        assert hit["object"] == "search_result"
        assert (hit["connection_id"], hit["stream"], hit["record_key"]) in BY_KEY
        record = BY_KEY[(hit["connection_id"], hit["stream"], hit["record_key"])]
        assert hit["connector_id"] == record["connector_id"]
        assert datetime.fromisoformat(hit["emitted_at"]) == datetime.fromisoformat(record["updated_at"].replace("Z", "+00:00"))
        assert hit["matched_fields"] and set(hit["matched_fields"]) <= set(record["fields"])
        assert hit["snippet"]["field"] in record["fields"] and hit["snippet"]["text"]
    if mode == "hybrid":
        assert all(h["retrieval_mode"] == "hybrid" and h["retrieval_sources"] == list(h["scores"]) for h in hits)
        assert all(set(h["scores"]) <= {"lexical", "semantic"} and h["scores"] for h in hits)
        assert any(len(h["scores"]) == 2 for h in hits)
        for hit in hits:
            for kind, score in hit["scores"].items():
                assert score["order"] == "lower_is_better"
                assert score["kind"] == {"lexical": "bm25", "semantic": "semantic_distance"}[kind]
        assert "meta" not in body  # no warnings
    else:
        kind = {"lexical": "bm25", "semantic": "semantic_distance"}[mode]
        values = [h["score"]["value"] for h in hits]
        assert all(h["score"]["kind"] == kind and h["score"]["order"] == "lower_is_better" for h in hits)
        assert values == sorted(values)  # lower is better, best first
    if mode == "lexical":
        assert any("<mark>" in h["snippet"]["text"] for h in hits)
        meta = body["meta"]
        assert meta["count_accuracy"] in ("exact", "lower_bound") and meta["count"] >= 10
        assert meta["recall"]["ranking_scope"] in ("all_matches", "candidate_window")
    if mode == "semantic":
        assert "meta" not in body
        assert not any("<mark>" in h["snippet"]["text"] for h in hits)  # verbatim text


def test_lexical_meta_counts_what_the_planner_knows(owner, deployment):
    body = owner.get("/v1/search", params={"q": "government"}).json()
    # Every match was ranked (a small corpus): the count is exact, and it is the records that match.
    db = deployment["db"]
    with db.connection() as conn:
        matching = conn.execute(
            "SELECT count(DISTINCT record_id) FROM semindex.lexical_documents WHERE document @@ plainto_tsquery('simple', 'government')"
        ).fetchone()[0]
    assert body["meta"]["count"] == matching and body["meta"]["count_accuracy"] == "exact"
    assert body["meta"]["recall"] == {"complete": True, "ranking_scope": "all_matches", "truncated": False,
                                      "ranked_candidate_count": body["meta"]["recall"]["ranked_candidate_count"],
                                      "sources_searched_count": 7}
    assert len(body["data"]) == min(25, matching)


def test_limit_defaults_to_25_and_is_clamped_at_100_with_a_warning(owner):
    assert len(owner.get("/v1/search", params={"q": "the"}).json()["data"]) == 25
    body = owner.get("/v1/search/semantic", params={"q": "the", "limit": 500}).json()
    assert len(body["data"]) == 70  # every record, capped at 100
    assert body["meta"]["warnings"] == [{"code": "limit_clamped", "message": body["meta"]["warnings"][0]["message"],
                                         "detail": {"max_limit": 100, "requested_limit": 500}}]
    for value, message in (("0", "at least 1"), ("ten", "integer"), ("-3", "at least 1")):
        error = _error(owner.get("/v1/search", params={"q": "the", "limit": value}), 400, "invalid_request", "limit")
        assert message in error["message"]


@pytest.mark.parametrize("mode", list(ROUTES))
def test_the_parameter_allowlist(owner, mode):
    _error(owner.get(ROUTES[mode], params={"q": "x", "page": "2"}), 400, "invalid_request", "page")
    _error(owner.get(ROUTES[mode], params={"q": "x", "filter[subject]": "hi"}), 400, "invalid_request", "filter[subject]")
    _error(owner.get(ROUTES[mode], params={"limit": "3"}), 400, "invalid_request", "q")
    _error(owner.get(ROUTES[mode], params={"q": "   "}), 400, "invalid_request", "q")
    _error(owner.get(ROUTES[mode], params=[("q", "a"), ("q", "b")]), 400, "invalid_request", "q")
    if mode == "hybrid":
        _error(owner.get(ROUTES[mode], params={"q": "x", "cursor": "abc"}), 400, "invalid_request", "cursor")
    if mode != "lexical":
        for name in REJECTED:
            error = _error(owner.get(ROUTES[mode], params={"q": "x", name: "1"}), 400, "invalid_request", name)
            assert "POST /v1/query" in error["message"]


def test_streams_in_every_spelling_and_connection_with_its_deprecated_alias(owner):
    def records(params):
        body = owner.get("/v1/search", params=params).json()
        return body, {(h["connection_id"], h["stream"]) for h in body["data"]}

    for params in ({"q": "the", "streams": "sport,tech"}, [("q", "the"), ("streams[]", "sport"), ("streams[]", "tech")],
                   [("q", "the"), ("streams", "sport"), ("streams", "tech")]):
        _, sources = records(params)
        assert sources == {("bbc", "sport"), ("bbc", "tech")}
    # An owner's unknown stream is a soft filter: no hits, no error.
    body, sources = records({"q": "the", "streams": "nope"})
    assert body["data"] == [] and body["meta"]["count"] == 0
    body, sources = records({"q": "you doing", "connection_id": "chitchat-main"})
    assert sources == {("chitchat-main", "messages")} and "warnings" not in body["meta"]
    aliased, alias_sources = records({"q": "you doing", "connector_instance_id": "chitchat-main"})
    assert alias_sources == sources and aliased["data"] == body["data"]
    assert aliased["meta"]["warnings"][0]["code"] == "deprecated_alias_used"
    _error(owner.get("/v1/search", params={"q": "the", "connection_id": "nope"}), 404, "connection_not_found", "connection_id")
    _error(owner.get("/v1/search/semantic", params={"q": "the", "connection_id": "nope"}), 404, "connection_not_found")
    _error(owner.get("/v1/search", params={"q": "the", "connection_id": "bbc", "connector_instance_id": "chitchat-main"}),
           400, "invalid_request", "connector_instance_id")


def test_the_discovery_document_needs_no_token_and_describes_the_serving_version(deployment):
    with deployment["service"].client() as anonymous:
        body = anonymous.get("/.well-known/oauth-protected-resource").json()
    search = body["search"]
    assert search["lexical"] | {"endpoint": None} == {
        "supported": True, "endpoint": None, "default_limit": 25, "max_limit": 100, "cursor_supported": True,
        "score": {"kind": "bm25", "order": "lower_is_better"}}
    assert search["lexical"]["endpoint"].endswith("/v1/search")
    semantic = search["semantic"]
    assert (semantic["model"], semantic["dimensions"], semantic["distance_metric"], semantic["index_state"]) == (
        "hashing-64", 64, "cosine", "built")
    assert search["hybrid"]["cursor_supported"] is False and search["hybrid"]["sources"] == ["lexical", "semantic"]


# ---- auth ----------------------------------------------------------------------------------------

def test_missing_unknown_revoked_and_expired_tokens(deployment):
    service, db = deployment["service"], deployment["db"]
    for token in (None, "smx_not-a-token-anyone-issued"):
        with service.client(token) as client:
            for mode in ROUTES:
                response = client.get(ROUTES[mode], params={"q": "the"})
                _error(response, 401, "authentication_error")
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert response.json()["error"]["type"] == "authentication_error"
    token, row = create_token(db, "to revoke")
    with service.client(token) as client:
        assert client.get("/v1/search", params={"q": "the"}).status_code == 200
        revoke_token(db, row.token_id)
        error = _error(client.get("/v1/search", params={"q": "the"}), 403, "grant_revoked")  # the very next request
        assert error["type"] == "permission_error"
    expired, _ = create_token(db, "expired", grant=Grant(streams=("sport",)),
                              expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
    with service.client(expired) as client:
        _error(client.get("/v1/search/hybrid", params={"q": "the"}), 403, "grant_expired")
    states = {row.label: row.state for row in list_tokens(db)}
    assert states["to revoke"] == "revoked" and states["expired"] == "expired"


def test_a_grant_bound_token_may_not_name_a_stream_outside_its_grant(deployment):
    token = grant_token(deployment["db"], Grant(streams=("sport", "tech")))
    with deployment["service"].client(token) as client:
        for mode in ROUTES:
            _error(client.get(ROUTES[mode], params={"q": "the", "streams": "sport,politics"}), 403,
                   "grant_stream_not_allowed", "streams")
            body = client.get(ROUTES[mode], params={"q": "the", "streams": "tech"}).json()
            assert {h["stream"] for h in body["data"]} == {"tech"}
        problem = client.post("/v1/query", json={"q": "the", "streams": ["politics"]})
        assert problem.status_code == 403 and problem.json()["code"] == "grant_stream_not_allowed"
        # A connection outside the grant reads like an unknown one.
        token_bbc = grant_token(deployment["db"], Grant(connections=("bbc",)))
    with deployment["service"].client(token_bbc) as client:
        _error(client.get("/v1/search", params={"q": "the", "connection_id": "chitchat-main"}), 404, "connection_not_found")


def _grant_strategy():
    sources = sorted({(r["connector_instance_id"], r["stream"]) for r in RECORDS})
    streams = sorted({stream for _, stream in sources})
    keys = sorted({r["record_key"] for r in RECORDS})
    field_names = {stream: sorted({f for r in RECORDS if r["stream"] == stream for f in r["fields"]}) for stream in streams}
    days = st.integers(min_value=0, max_value=50).map(lambda d: BBC_START + timedelta(days=d))

    @st.composite
    def grants(draw):
        chosen_streams = draw(st.lists(st.sampled_from(streams), unique=True, max_size=4))
        fields = {}
        for stream in draw(st.lists(st.sampled_from(streams), unique=True, max_size=3)):
            fields[stream] = tuple(draw(st.lists(st.sampled_from(field_names[stream]), unique=True, min_size=1)))
        since = draw(st.none() | days)
        until = draw(st.none() | days)
        if since and until and since >= until:
            since, until = until - timedelta(days=1), since + timedelta(days=1)
        return Grant(
            connections=tuple(draw(st.lists(st.sampled_from(sorted({c for c, _ in sources})), unique=True, max_size=2))),
            streams=tuple(chosen_streams),
            fields=tuple(sorted(fields.items())),
            since=since, until=until,
            record_keys=tuple(draw(st.lists(st.sampled_from(keys), unique=True, max_size=12))),
        )
    return grants()


def _inside(grant: Grant, hit: dict) -> bool:
    key = (hit["connection_id"], hit["stream"], hit["record_key"])
    record = BY_KEY.get(key)
    if record is None:
        return False
    updated = datetime.fromisoformat(record["updated_at"].replace("Z", "+00:00"))
    allowed_fields = dict(grant.fields).get(hit["stream"]) or tuple(record["fields"])
    return ((not grant.connections or hit["connection_id"] in grant.connections)
            and (not grant.streams or hit["stream"] in grant.streams)
            and (not grant.record_keys or hit["record_key"] in grant.record_keys)
            and (grant.since is None or updated >= grant.since)
            and (grant.until is None or updated < grant.until)
            and hit["snippet"]["field"] in allowed_fields
            and set(hit["matched_fields"]) <= set(allowed_fields))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(grant=_grant_strategy(), query=st.sampled_from(["the", "said government", "football OR music", "\"the\" -year", "and"]),
       mode=st.sampled_from(list(ROUTES)))
def test_nothing_outside_a_grant_reaches_hits_snippets_scores_or_counts(deployment, grant, query, mode):
    db, service = deployment["db"], deployment["service"]
    token = grant_token(db, grant)
    searcher = Searcher(db)
    narrowed = grant.narrow(Scope())
    with service.client(token) as client:
        seen: list[dict] = []
        body = client.get(ROUTES[mode], params={"q": query, "limit": 7}).json()
        first_meta = body.get("meta", {})
        while True:
            assert "error" not in body, body
            seen += body["data"]
            outside = [hit for hit in body["data"] if not _inside(grant, hit)]
            assert not outside, (grant, outside)
            if not body.get("next_cursor"):
                break
            body = client.get(ROUTES[mode], params={"q": query, "limit": 7, "cursor": body["next_cursor"]}).json()
        keys = [(h["connection_id"], h["stream"], h["record_key"]) for h in seen]
        assert len(keys) == len(set(keys))  # pages never repeat a record
    # The same search in-process, scoped by the grant's narrowed scope, finds the same records:
    # the route neither lost records inside the grant nor found any outside it.
    if narrowed is None:
        assert seen == []
        return
    if mode == "hybrid":
        expected = searcher.search(SearchRequest(query, mode="hybrid", k=7, scope=narrowed)).hits
        assert [h.record for h in expected] == keys
    else:
        ranking = searcher.ranking(SearchRequest(query, mode=mode, k=7, scope=narrowed))
        assert [h.record for h in ranking.hits] == keys
        if mode == "lexical":
            # Every match is ranked in a corpus this small: the count is exact, and it is the
            # granted records that match, nothing else.
            assert first_meta["count_accuracy"] == "exact"
            assert first_meta["count"] == len(keys) == ranking.meta.lexical.matched_records


# ---- cursors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["lexical", "semantic"])
def test_cursors_page_one_ranking_to_its_end(owner, deployment, mode):
    pages, params = [], {"q": "the", "limit": 15}
    body = owner.get(ROUTES[mode], params=params).json()
    pages.append(body)
    while body["has_more"]:
        body = owner.get(ROUTES[mode], params={**params, "cursor": body["next_cursor"]}).json()
        pages.append(body)
    paged = [(h["connection_id"], h["stream"], h["record_key"]) for page in pages for h in page["data"]]
    whole = owner.get(ROUTES[mode], params={"q": "the", "limit": 100}).json()["data"]
    assert paged == [(h["connection_id"], h["stream"], h["record_key"]) for h in whole]
    assert "next_cursor" not in pages[-1] and len(pages) == -(-len(paged) // 15)


def test_a_cursor_is_bound_to_its_token_query_and_scope_and_expires(owner, deployment):
    service = deployment["service"]
    first = owner.get("/v1/search", params={"q": "the", "limit": 5}).json()
    cursor = first["next_cursor"]
    other = owner_token(deployment["db"])
    with service.client(other) as client:  # another token replaying it
        messages = {_error(client.get("/v1/search", params={"q": "the", "limit": 5, "cursor": cursor}), 400,
                           "invalid_cursor", "cursor")["message"]}
    for params in ({"q": "then"}, {"q": "the", "streams": "sport"}, {"q": "the", "connection_id": "bbc"}):
        messages.add(_error(owner.get("/v1/search", params={**params, "limit": 5, "cursor": cursor}), 400, "invalid_cursor")["message"])
    messages.add(_error(owner.get("/v1/search/semantic", params={"q": "the", "limit": 5, "cursor": cursor}), 400, "invalid_cursor")["message"])
    payload, _, signature = cursor.partition(".")
    tampered = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1] + "." + signature
    for bad in (tampered, cursor + "x", "garbage", "", "a.b"):
        messages.add(_error(owner.get("/v1/search", params={"q": "the", "limit": 5, "cursor": bad}), 400, "invalid_cursor")["message"])
    assert owner.get("/v1/search", params={"q": "the", "limit": 5, "cursor": cursor}).status_code == 200
    # Expired: its snapshot is older than five minutes.
    for path in deployment["snapshots"].glob("*.json"):
        os.utime(path, (time.time() - 301, time.time() - 301))
    messages.add(_error(owner.get("/v1/search", params={"q": "the", "limit": 5, "cursor": cursor}), 400, "invalid_cursor")["message"])
    assert len(messages) == 1  # one message whatever went wrong: it tells nothing about the snapshot


# ---- the native route ----------------------------------------------------------------------------

def test_the_native_route_takes_every_option_and_answers_problem_json(owner, deployment):
    body = owner.post("/v1/query", json={"q": "the government", "mode": "hybrid", "k": 5, "fusion": "rrf",
                                         "streams": ["politics", "business"], "fields": ["body"]}).json()
    assert len(body["hits"]) == 5 and body["meta"]["fusion"]["method"] == "rrf"
    assert all(h["stream"] in ("politics", "business") and h["field"] == "body" for h in body["hits"])
    passages = owner.post("/v1/query", json={"q": "the", "mode": "lexical", "unit": "chunks", "k": 10}).json()
    assert passages["meta"]["unit"] == "chunks"
    shadow = owner.post("/v1/query", json={"q": "the", "mode": "semantic", "version": VERSION_KEY}).json()
    assert shadow["meta"]["version"] == VERSION_KEY
    keyed = owner.post("/v1/query", json={"q": "the", "mode": "lexical", "record_keys": ["sport/001", "tech/002"]}).json()
    assert {h["record_key"] for h in keyed["hits"]} <= {"sport/001", "tech/002"}
    for payload, param in (({"q": "x", "k": 0}, "k"), ({"q": "x", "mode": "fuzzy"}, "mode"), ({"q": "x", "nope": 1}, "nope"),
                           ({"k": 3}, "q"), ({"q": "x", "version": "no-such-version"}, None)):
        response = owner.post("/v1/query", json=payload)
        assert response.headers["content-type"] == "application/problem+json", response.text
        problem = response.json()
        assert problem["status"] == response.status_code and problem["instance"] == "/v1/query"
        assert {"type", "title", "detail", "code", "request_id"} <= set(problem)
        if param:
            assert response.status_code == 400 and problem["param"] == param, problem
        else:
            assert response.status_code == 404 and "no-such-version" in problem["detail"]
    response = owner.post("/v1/query", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.headers["content-type"] == "application/problem+json"


def test_request_size_limits_and_query_length(owner):
    response = owner.post("/v1/query", json={"q": "x" * 70_000})
    assert response.status_code == 413 and response.json()["code"] == "request_entity_too_large"
    _error(owner.get("/v1/search", params={"q": "word " * 900}), 400, "invalid_request")  # 4,500 characters
    _error(owner.get("/v1/search", params={"q": "x" * 17_000}), 413, "request_entity_too_large")


# ---- operations ----------------------------------------------------------------------------------

def test_health_metrics_request_ids_and_docs(owner, deployment):
    service = deployment["service"]
    with service.client() as anonymous:
        assert anonymous.get("/livez").json() == {"status": "ok"}
        ready = anonymous.get("/readyz").json()
        assert ready == {"status": "ready", "checks": {"database": True, "serving_version": VERSION_KEY, "encoder_loaded": True}}
        spec = anonymous.get("/openapi.json").json()
        assert {"/v1/search", "/v1/search/semantic", "/v1/search/hybrid", "/v1/query", "/livez", "/readyz", "/metrics",
                "/.well-known/oauth-protected-resource"} <= set(spec["paths"])
        assert spec["openapi"].startswith("3.1")
        assert "examples" in json.dumps(spec["paths"]["/v1/query"]) or "examples" in json.dumps(spec["components"])
        assert "interleave" in spec["paths"]["/v1/search/hybrid"]["get"]["description"]
        docs = anonymous.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
    response = owner.get("/v1/search", params={"q": "the"}, headers={"X-Request-Id": "client-chosen-42"})
    assert response.headers["x-request-id"] == "client-chosen-42"
    assert owner.get("/v1/search", params={"q": "the"}, headers={"X-Request-Id": "bad id; <script>"}).headers["x-request-id"].startswith("req_")
    owner.get("/v1/search/semantic", params={"q": "a query for the cache"})
    owner.get("/v1/search/semantic", params={"q": "a query for the cache"})
    text = service.client().get("/metrics").text
    assert 'semindex_http_requests_total{method="GET",route="/v1/search",status="200"}' in text
    assert 'semindex_http_request_duration_seconds_bucket{le="0.05",method="GET",route="/v1/search"}' in text
    assert 'semindex_query_vector_cache_total{result="hit"}' in text
    assert "semindex_search_plans_total{" in text
    assert "client-chosen-42" in service.log()


def test_the_injection_corpus_through_every_parameter(owner, deployment):
    db = deployment["db"]
    before = snapshot(db)
    statuses = set()
    for payload in PAYLOADS:
        for mode in ROUTES:
            for name in ("q", "streams", "connection_id", "cursor", "limit", payload):
                params = {"q": "the", name: payload} if name != "q" else {"q": payload}
                if mode == "hybrid" and name == "cursor":
                    continue
                sendable = payload.isascii() and payload.isprintable() and payload == payload.strip() and payload
                response = owner.get(ROUTES[mode], params=params, headers={"X-Request-Id": payload} if sendable else {})
                statuses.add(response.status_code)
                assert response.status_code in (200, 400, 404), (mode, name, payload, response.text)
                assert "Traceback" not in response.text
        response = owner.post("/v1/query", json={"q": payload, "streams": [payload], "fields": [payload],
                                                 "record_keys": [payload], "connector_instance_ids": [payload]})
        assert response.status_code in (200, 400), (payload, response.text)
    assert snapshot(db) == before
    assert 200 in statuses and 400 in statuses


def test_the_service_keeps_answering_while_the_pipeline_writes(owner, deployment, tmp_path):
    db = deployment["db"]
    more = [dict(r, record_key=f"{r['record_key']}-new", updated_at="2026-06-01T00:00:00Z") for r in sample_records(per_stream=30)[200:]]
    failures, answered = [], []
    done = threading.Event()

    def write():
        try:
            raw_records.ingest_file(db, write_jsonl(tmp_path / "more.jsonl", more))
            chunks.sync_chunks(db, ChunkingParameters())
            embeddings.backfill(db, get_version(db, VERSION_KEY))
            retained_size.refresh_projection(db)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    while not done.is_set() or len(answered) < 10:
        for mode in ROUTES:
            response = owner.get(ROUTES[mode], params={"q": "the", "limit": 10})
            (answered if response.status_code == 200 else failures).append(response.status_code)
    writer.join()
    assert not failures and len(answered) >= 10
    new = owner.get("/v1/search", params={"q": "the", "limit": 100}).json()["data"]
    assert any(h["record_key"].endswith("-new") for h in new)  # the writes are searchable at once


def test_sigterm_stops_the_service_cleanly(deployment, tmp_path):
    with running_service(deployment["url"], tmp_path / "home") as service:
        assert service.client(deployment["owner"]).get("/v1/search", params={"q": "the"}).status_code == 200
        process = service.process
    # uvicorn re-raises the signal once it has shut down gracefully, so the exit status says "SIGTERM".
    assert process.returncode in (0, -signal.SIGTERM), service.log()
    assert "Traceback" not in service.log()
    assert "Application shutdown complete" in service.log()


# ---- filters -------------------------------------------------------------------------------------

def test_owner_filters_on_record_fields(owner, deployment):
    sender = next(r["fields"]["sender"] for r in RECORDS if r["stream"] == "messages")
    by_sender = [r for r in RECORDS if r["stream"] == "messages" and r["fields"]["sender"] == sender]
    for mode in ("lexical", "semantic", "hybrid"):
        body = owner.get(ROUTES[mode], params={"q": "you are doing what", "streams": "messages", "filter[sender]": sender}).json()
        keys = {h["record_key"] for h in body["data"]}
        assert keys and keys <= {r["record_key"] for r in by_sender}, body
    body = owner.get("/v1/search/semantic", params={"q": "the", "streams": "sport", "limit": 100,
                                                     "filter[headline][gte]": "M", "filter[headline][lt]": "T"}).json()
    expected = {r["record_key"] for r in RECORDS if r["stream"] == "sport" and "M" <= r["fields"]["headline"] < "T"}
    assert {h["record_key"] for h in body["data"]} == expected and expected
    problem = owner.post("/v1/query", json={"q": "the", "mode": "semantic", "streams": ["sport"], "k": 100,
                                            "filters": [{"field": "headline", "op": "lt", "value": "M"}]}).json()
    assert {h["record_key"] for h in problem["hits"]} == {r["record_key"] for r in RECORDS
                                                           if r["stream"] == "sport" and r["fields"]["headline"] < "M"}
    first = owner.get("/v1/search", params={"q": "the", "limit": 2, "streams": "sport", "filter[headline][gte]": "A"}).json()
    _error(owner.get("/v1/search", params={"q": "the", "limit": 2, "streams": "sport", "filter[headline][gte]": "B",
                                           "cursor": first["next_cursor"]}), 400, "invalid_cursor")
    _error(owner.get("/v1/search", params={"q": "the", "filter[sender]": sender}), 400, "invalid_request", "filter[sender]")
    _error(owner.get("/v1/search", params={"q": "the", "streams": "sport,tech", "filter[a]": "b"}), 400, "invalid_request")
    _error(owner.get("/v1/search", params={"q": "the", "streams": "sport", "filter[a][like]": "b"}), 400,
           "invalid_request", "filter[a][like]")
    token = grant_token(deployment["db"], Grant(streams=("sport",)))
    with deployment["service"].client(token) as client:
        _error(client.get("/v1/search", params={"q": "the", "streams": "sport", "filter[headline]": "x"}), 403, "filter_not_allowed")


def test_filter_values_compare_as_numbers_when_both_are_numbers(deployment):
    with deployment["db"].connection() as conn:
        def matches(value: str, op: str, wanted: str) -> bool:
            return conn.execute("SELECT semindex.value_matches(%s::jsonb, %s, %s)", (value, op, wanted)).fetchone()[0]

        assert matches("10", "gt", "9") and not matches('"10"', "gt", "9")  # a number, then text
        assert matches("2.5", "lte", "2.5") and matches("-1", "lt", "0") and matches("1e3", "gte", "999")
        assert matches('"2026-05-01T00:00:00Z"', "gte", "2026-01-01") and not matches('"b"', "lt", "a")
        assert matches('"x"', "eq", "x") and matches("7", "eq", "7") and not matches("null", "eq", "null")
        assert not matches('{"a": 1}', "eq", '{"a": 1}') and not matches("10", "gt", "ten")


# ---- snapshots and the tokens command ------------------------------------------------------------

def test_snapshots_are_bounded_oldest_first(tmp_path):
    from semindex.search.ranking import Ranking
    from semindex.search.response import ResponseMeta
    from semindex_app.service.cursors import InvalidCursor, SnapshotStore

    store = SnapshotStore(tmp_path, max_snapshots=3, max_bytes=10**9, eviction_interval=0)
    names = []
    for number in range(5):
        names.append(store.put(Ranking([], ResponseMeta("lexical", number + 1))))
        time.sleep(0.01)  # distinct modification times
    assert sorted(path.stem for path in tmp_path.glob("*.json")) == sorted(names[2:])
    assert store.get(names[-1]).meta.k == 5
    for name in names[:2] + ["../../etc/passwd", "x" * 30]:
        with pytest.raises(InvalidCursor):
            store.get(name)
    small = SnapshotStore(tmp_path / "bytes", max_bytes=1, eviction_interval=0)
    first = small.put(Ranking([], ResponseMeta("lexical", 1)))
    small.put(Ranking([], ResponseMeta("lexical", 2)))
    with pytest.raises(InvalidCursor):
        small.get(first)  # over the byte bound: the oldest went


def test_the_tokens_command_creates_lists_and_revokes(deployment, monkeypatch, capsys):
    from semindex_app.cli import main

    monkeypatch.setenv("DATABASE_URL", deployment["url"])
    assert main(["tokens", "create", "--label", "cli client", "--grant", '{"streams": ["sport"]}', "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["token"].startswith("smx_") and created["grant"]["streams"] == ["sport"]
    with deployment["service"].client(created["token"]) as client:
        assert {h["stream"] for h in client.get("/v1/search", params={"q": "the"}).json()["data"]} == {"sport"}
    assert main(["tokens", "list"]) == 0
    listing = capsys.readouterr().out
    assert "cli client" in listing and created["token"] not in listing  # shown once, never again
    assert main(["tokens", "revoke", str(created["token_id"])]) == 0
    with deployment["service"].client(created["token"]) as client:
        assert client.get("/v1/search", params={"q": "the"}).status_code == 403
    for arguments, message in ((["tokens", "create", "--label", "x"], "exactly one of --owner"),
                               (["tokens", "create", "--label", "x", "--grant", "{nope"], "--grant is not JSON"),
                               (["tokens", "create", "--label", "x", "--grant", '{"streams": "sport"}'], "must be a list"),
                               (["tokens", "create", "--label", "x", "--owner", "--expires", "tomorrow"], "ISO 8601"),
                               (["tokens", "revoke", "999999"], "no token with id 999999")):
        assert main(arguments) == 2
        assert message in capsys.readouterr().err


def test_a_new_service_removes_the_folders_of_services_that_exited(tmp_path, monkeypatch):
    from semindex_app.service.serve import prepare_environment

    monkeypatch.setenv("SEMINDEX_HOME", str(tmp_path))
    for name in ("SEMINDEX_SNAPSHOT_DIR", "SEMINDEX_CURSOR_SECRET", "PROMETHEUS_MULTIPROC_DIR"):
        monkeypatch.delenv(name, raising=False)
    runs = tmp_path / "run"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (runs / f"serve-{dead.stdout.strip()}" / "snapshots").mkdir(parents=True)
    (runs / f"serve-{os.getppid()}").mkdir()  # a live process's: kept
    shared = prepare_environment()
    for name, value in shared.items():
        monkeypatch.setenv(name, value)  # monkeypatch restores them afterwards
    assert sorted(path.name for path in runs.iterdir()) == sorted([f"serve-{os.getppid()}", f"serve-{os.getpid()}"])
