"""The reference server's search routes (../shared/reference/http-contract.md), compatible with its
clients: GET /v1/search (lexical), /v1/search/semantic and /v1/search/hybrid, and the
/.well-known/oauth-protected-resource document.

The route is the mode. Parameters are a strict allowlist; `limit` defaults to 25 and is clamped at
100 with a warning; a grant-bound token's grant narrows the scope before any matching. Scores are
typed and lower is better. Lexical and semantic pages come from a cursor's snapshot (cursors.py).
Hybrid serves semindex's fusion (the version's declared method, by default a z-score blend), which
ranks differently from the reference server's round-robin interleave: the contract allows it
("relevance-oriented", no portable score).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from semindex.access import Caller
from semindex.errors import NotFound
from semindex.lifecycle import serving_facts
from semindex.search import Hit, Scope, SearchRequest
from semindex.search.ranking import RANKING_DEPTH, Ranking
from semindex.search.request import FILTER_OPS
from semindex.search.response import LexicalMeta
from semindex.search.sources import connection_exists
from semindex.shadow_traffic import DEPTH as SHADOW_DEPTH
from semindex_app.service import metrics
from semindex_app.service.auth import caller
from semindex_app.service.cursors import CursorPosition, InvalidCursor, binding
from semindex_app.service.errors import ApiError

DEFAULT_LIMIT = 25
MAX_LIMIT = 100
_FILTER = re.compile(r"filter\[([^\[\]]+)\](?:\[(" + "|".join(FILTER_OPS) + r")\])?")
ROUTES = {"lexical": "/v1/search", "semantic": "/v1/search/semantic", "hybrid": "/v1/search/hybrid"}
_COMMON = {"q", "limit", "streams", "streams[]", "connection_id", "connector_instance_id"}
ALLOWED = {"lexical": _COMMON | {"cursor"}, "semantic": _COMMON | {"cursor"}, "hybrid": _COMMON}
# Named in the contract: what a client may not choose on the compatible semantic and hybrid routes
# (POST /v1/query offers most of them).
REJECTED = {"vector", "embedding", "embed", "model", "model_id", "rank", "boost", "weights", "blend",
            "connector_id", "fields", "expand", "order", "sort", "mode"}

router = APIRouter(tags=["search (reference-compatible)"])


@dataclass
class CompatibleQuery:
    """A compatible route's parameters, checked against its allowlist."""

    mode: str
    q: str
    limit: int
    cursor: str | None
    streams: tuple[str, ...]
    connection: str | None
    filters: tuple[tuple[str, str, str], ...] = ()
    warnings: list[dict] = field(default_factory=list)

    @classmethod
    def parse(cls, mode: str, items: list[tuple[str, str]]) -> CompatibleQuery:
        values: dict[str, list[str]] = {}
        filters: dict[tuple[str, str], str] = {}
        for key, value in items:
            if key.startswith("filter["):
                rule = _FILTER.fullmatch(key)
                if rule is None:
                    raise ApiError(400, "invalid_request", f"{key!r} is not filter[field]=value nor filter[field][op]=value "
                                   f"with op one of {', '.join(FILTER_OPS)}", param=key)
                name, op = rule.group(1), rule.group(2) or "eq"
                if (name, op) in filters:
                    raise ApiError(400, "invalid_request", f"{key!r} is given twice", param=key)
                filters[(name, op)] = value
                continue
            if mode != "lexical" and key in REJECTED:
                raise ApiError(400, "invalid_request", f"{key!r} is not accepted by {ROUTES[mode]}: the route is the mode "
                               "and the server chooses the model and ranking (POST /v1/query takes mode, fusion, weights, "
                               "version and fields)", param=key)
            if key not in ALLOWED[mode]:
                raise ApiError(400, "invalid_request", f"unknown parameter {key!r} for {ROUTES[mode]}; accepted: "
                               f"{', '.join(sorted(ALLOWED[mode]))}", param=key)
            values.setdefault(key, []).append(value)
        for key, given in values.items():
            if len(given) > 1 and key not in ("streams", "streams[]"):
                raise ApiError(400, "invalid_request", f"parameter {key!r} is given {len(given)} times", param=key)
        q = values.get("q", [""])[0]
        if not q.strip():
            raise ApiError(400, "invalid_request", "q is required and must not be empty", param="q")
        warnings: list[dict] = []
        limit = DEFAULT_LIMIT
        if "limit" in values:
            try:
                limit = int(values["limit"][0])
            except ValueError:
                raise ApiError(400, "invalid_request", f"limit={values['limit'][0]!r} is not a whole number", param="limit") from None
            if limit < 1:
                raise ApiError(400, "invalid_request", f"limit={limit} must be at least 1", param="limit")
            if limit > MAX_LIMIT:
                warnings.append({"code": "limit_clamped", "message": f"limit {limit} is above the maximum; {MAX_LIMIT} returned",
                                 "detail": {"max_limit": MAX_LIMIT, "requested_limit": limit}})
                limit = MAX_LIMIT
        streams = [name.strip() for value in values.get("streams", []) + values.get("streams[]", [])
                   for name in value.split(",") if name.strip()]
        connection = values.get("connection_id", [None])[0]
        alias = values.get("connector_instance_id", [None])[0]
        if alias is not None:
            warnings.append({"code": "deprecated_alias_used", "message": "connector_instance_id is deprecated; use connection_id",
                             "detail": {"alias": "connector_instance_id", "use": "connection_id"}})
            if connection is not None and connection != alias:
                raise ApiError(400, "invalid_request", "connection_id and connector_instance_id name different connections",
                               param="connector_instance_id")
            connection = connection or alias
        if connection is not None and not connection.strip():
            raise ApiError(400, "invalid_request", "connection_id must not be empty", param="connection_id")
        streams = tuple(dict.fromkeys(streams))
        if filters and len(streams) != 1:
            raise ApiError(400, "invalid_request", "filter[...] needs exactly one stream in `streams` (a field belongs "
                           f"to a stream's records); got {len(streams)}", param=f"filter[{next(iter(filters))[0]}]")
        return cls(mode, q, limit, values.get("cursor", [None])[0], streams, connection,
                   tuple((name, op, value) for (name, op), value in sorted(filters.items())), warnings)

    def scope(self) -> Scope:
        return Scope(connector_instance_ids=(self.connection,) if self.connection else (), streams=self.streams,
                     record_filters=self.filters)

    def bound_to(self, who: Caller, scope: Scope | None) -> str:
        """What a cursor from this request is bound to: the token, its grant, the route and the scope."""
        return binding(who.fingerprint, who.grant.as_json() if who.grant else None, self.mode, self.q,
                       sorted(self.streams), self.connection, self.filters, repr(scope))


class Searches:
    """The compatible routes' work, run in a worker thread (the library is synchronous)."""

    def __init__(self, app_state) -> None:
        self.state = app_state

    def check_connection(self, who: Caller, name: str | None) -> None:
        if name is not None and who.owner and not connection_exists(self.state.db, name):
            raise NotFound(f"no connection {name!r}", code="connection_not_found", param="connection_id")

    def first_page(self, query: CompatibleQuery, scope: Scope | None) -> tuple[Ranking | None, list[Hit], dict]:
        searcher = self.state.searcher
        request = SearchRequest(query.q, mode=query.mode, k=min(query.limit, MAX_LIMIT),
                                scope=scope or Scope()).validated()
        if query.mode == "hybrid":
            if scope is None:
                return None, [], {}
            response = searcher.search(request)
            metrics.record_plans(query.mode, response.meta)
            return None, response.hits, {"version": response.meta.version}
        if scope is None:
            return None, [], {"lexical": LexicalMeta(False, [], None, "exact", "exact", 0, True)}
        ranking = searcher.ranking(request, RANKING_DEPTH)
        metrics.record_plans(query.mode, ranking.meta)
        return ranking, searcher.page(ranking, 0, query.limit), {"lexical": ranking.meta.lexical, "version": ranking.meta.version}


def _search_params(request: Request) -> list[tuple[str, str]]:
    return list(request.query_params.multi_items())


async def _answer(mode: str, request: Request, who: Caller, background: BackgroundTasks) -> dict:
    state = request.app.state
    query = CompatibleQuery.parse(mode, _search_params(request))
    if query.filters and not who.owner:
        raise ApiError(403, "filter_not_allowed", "filter[...] is for owner tokens; a client token's grant already "
                       "decides what it sees", param=f"filter[{query.filters[0][0]}]")
    works = Searches(state)
    await run_in_threadpool(works.check_connection, who, query.connection)
    scope = who.scope(query.scope())
    bound_to = query.bound_to(who, scope)
    if query.cursor is not None:
        try:
            position = state.cursors.decode(query.cursor, bound_to)
            ranking = await run_in_threadpool(state.snapshots.get, position.snapshot)
        except InvalidCursor:
            metrics.CURSORS.labels("invalid").inc()
            raise ApiError(400, "invalid_cursor", "the cursor is not valid for this token and query, or has expired; "
                           "search again without it", param="cursor") from None
        metrics.CURSORS.labels("served").inc()
        offset = position.offset
        hits = await run_in_threadpool(state.searcher.page, ranking, offset, query.limit)
        lexical_meta = ranking.meta.lexical
    else:
        ranking, hits, extra = await run_in_threadpool(works.first_page, query, scope)
        offset = 0
        lexical_meta = extra.get("lexical")
        if state.mirror is not None and scope is not None:
            # Shadow traffic: offered once the response is sent (a non-blocking put on a bounded queue).
            served = [hit.record for hit in (ranking.hits if ranking is not None else hits)][:SHADOW_DEPTH]
            background.add_task(state.mirror.offer, SearchRequest(query.q, mode=mode, k=SHADOW_DEPTH, scope=scope),
                                served, extra.get("version"))
    next_offset = offset + query.limit
    has_more = ranking is not None and len(ranking.hits) > next_offset
    body: dict = {"object": "list", "url": ROUTES[mode], "has_more": has_more,
                  "data": [_result(hit, mode) for hit in hits]}
    if has_more:
        snapshot = position.snapshot if query.cursor is not None else await run_in_threadpool(state.snapshots.put, ranking)
        body["next_cursor"] = state.cursors.encode(CursorPosition(snapshot, next_offset), bound_to)
    meta: dict = {}
    if mode == "lexical":
        meta.update(lexical_disclosure(lexical_meta))
    if query.warnings:
        meta["warnings"] = query.warnings
    if meta:
        body["meta"] = meta
    return body


def lexical_disclosure(meta: LexicalMeta | None) -> dict:
    """Lexical recall as the planner knows it: counts of records, exact only when every match was
    ranked; what it cannot prove is left out."""
    if meta is None:
        return {"count": None, "count_accuracy": "not_counted", "recall": {"complete": False, "ranking_scope": "unknown", "truncated": False}}
    complete = meta.matched_exact
    recall = {
        "complete": complete,
        "ranking_scope": "all_matches" if complete else "candidate_window",
        "truncated": meta.ranking == "truncated",
        "ranked_candidate_count": meta.matched,
        "sources_searched_count": meta.sources_searched,
    }
    if not complete and meta.candidate_window is not None:
        recall["candidate_window_limit"] = meta.candidate_window
    return {"count": meta.matched_records, "count_accuracy": "exact" if complete else "lower_bound", "recall": recall}


def _score(kind: str, hit: Hit) -> dict | None:
    if kind == "lexical" and "lexical" in hit.scores:
        return {"kind": "bm25", "value": -hit.scores["lexical"], "order": "lower_is_better"}
    if kind == "semantic" and "distance" in hit.scores:
        return {"kind": "semantic_distance", "value": hit.scores["distance"], "order": "lower_is_better"}
    return None


def _result(hit: Hit, mode: str) -> dict:
    result = {
        "object": "search_result", "stream": hit.stream, "record_key": hit.record_key,
        "connector_id": hit.connector_id, "connection_id": hit.connector_instance_id,
        "emitted_at": hit.updated_at.isoformat() if hit.updated_at else None,
        "matched_fields": list(hit.matched_fields),
        "snippet": {"field": hit.field, "text": hit.snippet},
    }
    if mode == "hybrid":
        scores = {kind: score for kind in ("lexical", "semantic") if (score := _score(kind, hit)) is not None}
        # The sources that found this record (a record only one of them found has only its score).
        result.update(retrieval_mode="hybrid", retrieval_sources=list(scores), scores=scores)
    else:
        result["score"] = _score(mode, hit)
    return result


_Q = Annotated[str, Query(description="The query. Lexical syntax: words, \"phrases\", -excluded, OR", examples=["budget deficit"])]
_LIMIT = Annotated[int | None, Query(description=f"Results per page, default {DEFAULT_LIMIT}; above {MAX_LIMIT} it is clamped "
                                     "(meta.warnings: limit_clamped)", examples=[10])]
_CURSOR = Annotated[str | None, Query(description="next_cursor of the previous page (same token and parameters)")]
_STREAMS = Annotated[list[str] | None, Query(description="Streams to search (repeat, or comma-separated); a grant-bound "
                                             "token may only name streams in its grant", examples=[["business"]])]
_CONNECTION = Annotated[str | None, Query(description="One connection (connector instance) to search", examples=["bbc"])]
_ALIAS = Annotated[str | None, Query(description="Deprecated alias of connection_id (adds a deprecated_alias_used warning)",
                                     deprecated=True)]
_EXAMPLE = {"object": "list", "url": "/v1/search", "has_more": True, "next_cursor": "eyJzIjoi...",
            "data": [{"object": "search_result", "stream": "business", "record_key": "bbc/business/017",
                      "connector_id": "bbc-news", "connection_id": "bbc", "emitted_at": "2026-01-02T10:00:00+00:00",
                      "matched_fields": ["body"], "snippet": {"field": "body", "text": "the <mark>budget</mark> ..."},
                      "score": {"kind": "bm25", "value": -11.2, "order": "lower_is_better"}}],
            "meta": {"count": 42, "count_accuracy": "exact",
                     "recall": {"complete": True, "ranking_scope": "all_matches", "truncated": False,
                                "ranked_candidate_count": 57, "sources_searched_count": 5}}}


@router.get("/v1/search", summary="Lexical search (BM25)", responses={200: {"content": {"application/json": {"example": _EXAMPLE}}}})
async def lexical(request: Request, background: BackgroundTasks, q: _Q, limit: _LIMIT = None, cursor: _CURSOR = None, streams: _STREAMS = None,
                  connection_id: _CONNECTION = None, connector_instance_id: _ALIAS = None,
                  who: Caller = Depends(caller)) -> dict:
    """Records ranked by BM25 over their fields, one hit per record, with a `<mark>`ed snippet.
    Owner tokens may add `filter[field]=value` or `filter[field][gt|gte|lt|lte]=value` on the
    records' own fields (numbers compare as numbers, other values as text), with exactly one stream.
    `meta` discloses recall: `count` (matching records), `count_accuracy` (`exact` when every match
    was ranked, else `lower_bound`) and `recall`: whether the ranking saw every match or a candidate
    window (`candidate_window_limit` per source), `ranked_candidate_count` (the record fields ranked;
    a record matches in one or more fields), `sources_searched_count`."""
    return await _answer("lexical", request, who, background)


@router.get("/v1/search/semantic", summary="Semantic search (the serving embedding version)")
async def semantic(request: Request, background: BackgroundTasks, q: _Q, limit: _LIMIT = None, cursor: _CURSOR = None, streams: _STREAMS = None,
                   connection_id: _CONNECTION = None, connector_instance_id: _ALIAS = None,
                   who: Caller = Depends(caller)) -> dict:
    """Records nearest in meaning, one per record (its nearest chunk, verbatim as the snippet); the
    score is the version's distance. Whenever `limit` records match, `limit` come back. `filter[...]`
    as on /v1/search."""
    return await _answer("semantic", request, who, background)


@router.get("/v1/search/hybrid", summary="Hybrid search (lexical and semantic, fused)")
async def hybrid(request: Request, background: BackgroundTasks, q: _Q, limit: _LIMIT = None, streams: _STREAMS = None,
                 connection_id: _CONNECTION = None, connector_instance_id: _ALIAS = None,
                 who: Caller = Depends(caller)) -> dict:
    """Both modes, 100 records deep each, fused by the serving version's declared method (by default
    a z-score blend, 0.45 lexical / 0.55 semantic, measured on the judged sets). This differs from the
    reference server's round-robin interleave: ranks differ, and there is no fused score; each hit
    carries its unfused scores in `scores` and the sources that found it in `retrieval_sources`.
    One page, no cursor: `has_more` is always false."""
    return await _answer("hybrid", request, who, background)


@router.get("/.well-known/oauth-protected-resource", tags=["discovery"], summary="What this server supports")
async def protected_resource(request: Request) -> dict:
    """No token needed. The search capabilities, including the serving embedding version's model,
    dimensions, metric and index state."""
    serving = await run_in_threadpool(serving_facts, request.app.state.db)
    base = str(request.base_url).rstrip("/")
    lexical = {"supported": True, "endpoint": f"{base}/v1/search", "default_limit": DEFAULT_LIMIT, "max_limit": MAX_LIMIT,
               "cursor_supported": True, "score": {"kind": "bm25", "order": "lower_is_better"}}
    capabilities = {"lexical": lexical}
    if serving is not None:
        capabilities["semantic"] = {
            **lexical, "endpoint": f"{base}/v1/search/semantic", "score": {"kind": "semantic_distance", "order": "lower_is_better"},
            **serving,
        }
        capabilities["hybrid"] = {"supported": True, "endpoint": f"{base}/v1/search/hybrid", "default_limit": DEFAULT_LIMIT,
                                  "max_limit": MAX_LIMIT, "cursor_supported": False, "sources": ["lexical", "semantic"]}
    else:
        capabilities["semantic"] = {"supported": False}
        capabilities["hybrid"] = {"supported": False}
    return {"resource": base, "bearer_methods_supported": ["header"], "search": capabilities}

