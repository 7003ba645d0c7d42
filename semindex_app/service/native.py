"""POST /v1/query: semindex's own search route, with every option the compatible routes forbid
(mode, fusion and weights, an explicit version for shadow queries, fields, record keys, passages).
The body goes through the library's one request parser; errors are RFC 9457 problem+json."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from semindex.access import Caller
from semindex.search import MAX_K, parse_request
from semindex.search.response import SearchResponse
from semindex.shadow_traffic import DEPTH as SHADOW_DEPTH
from semindex_app.service import metrics
from semindex_app.service.auth import caller
from semindex_app.service.errors import PROBLEM_JSON, ApiError

router = APIRouter(tags=["search (native)"])


class FilterRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str = Field(min_length=1, description="A field of the records (e.g. `sender`)")
    op: Literal["eq", "gt", "gte", "lt", "lte"] = "eq"
    value: str = Field(description="Compared as a number when both sides are numbers, else as text")


class QueryBody(BaseModel):
    """A search. Unknown keys are refused (problem+json 400 naming the key)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"q": "budget deficit", "mode": "hybrid", "k": 10, "streams": ["business", "politics"]},
        {"q": "transfer window", "mode": "semantic", "version": "mpnet-base-v2", "connector_instance_ids": ["bbc"]},
        {"q": "\"interest rates\" -mortgage", "mode": "lexical", "fields": ["body"], "unit": "chunks"},
        {"q": "elections", "mode": "hybrid", "fusion": "rrf"},
    ]})

    q: str = Field(description="The query (lexical syntax: words, \"phrases\", -excluded, OR)", max_length=4000)
    mode: Literal["lexical", "semantic", "hybrid"] = "hybrid"
    k: int = Field(25, ge=1, le=MAX_K, description="Hits to return")
    version: str | None = Field(None, description="An embedding version other than the serving one (shadow queries)")
    fusion: Literal["blend", "rrf", "interleave"] | None = Field(None, description="Hybrid fusion (default: the version's)")
    lexical_weight: float | None = Field(None, ge=0)
    semantic_weight: float | None = Field(None, ge=0)
    connector_instance_ids: list[str] | None = Field(None, description="Connections to search")
    streams: list[str] | None = None
    fields: list[str] | None = Field(None, description="Record fields to search")
    record_keys: list[str] | None = None
    unit: Literal["records", "chunks"] = Field("records", description="A hit per record, or per passage")
    lexical_window: int | None = Field(None, ge=100, le=10_000, description="Lexical candidates a search ranks in all")
    filters: list[FilterRule] | None = Field(None, description="Conditions on the records' own fields (owner tokens)")


@router.post("/v1/query", summary="Search with every option", responses={
    200: {"description": "Hits and how they were found"},
    400: {"content": {PROBLEM_JSON: {}}, "description": "A bad parameter (problem+json, `param` names it)"},
    401: {"content": {PROBLEM_JSON: {}}}, 403: {"content": {PROBLEM_JSON: {}}},
})
async def query(body: QueryBody, request: Request, background: BackgroundTasks, who: Caller = Depends(caller)) -> dict:
    """Any mode, fusion and weights, version, scope and unit. A grant-bound token's grant narrows the
    scope first. The answer is the library's SearchResponse: hits (record, field, chunk, snippet,
    `scores` with similarity and distance or BM25, per-mode `ranks`, `matched_fields`, `updated_at`)
    and `meta` (plans per source, lexical ranking and counts, fusion, timings)."""
    values = body.model_dump(exclude_none=True)
    values["query"] = values.pop("q")
    filters = tuple((rule["field"], rule["op"], rule["value"]) for rule in values.pop("filters", ()))
    if filters and not who.owner:
        raise ApiError(403, "filter_not_allowed", "filters are for owner tokens; a client token's grant already decides "
                       "what it sees", param="filters")
    search_request = parse_request(values)
    search_request = replace(search_request, scope=replace(search_request.scope, record_filters=filters)).validated()
    scope = who.scope(search_request.scope)
    if scope is None:
        return {"hits": [], "meta": {"mode": search_request.mode, "k": search_request.k, "empty_scope": True}}
    scoped = replace(search_request, scope=scope)
    response: SearchResponse = await run_in_threadpool(request.app.state.searcher.search, scoped)
    metrics.record_plans(search_request.mode, response.meta)
    mirror = request.app.state.mirror
    if mirror is not None and search_request.unit == "records":
        background.add_task(mirror.offer, replace(scoped, k=SHADOW_DEPTH), [hit.record for hit in response.hits][:SHADOW_DEPTH],
                            response.meta.version)
    return response.as_dict()
