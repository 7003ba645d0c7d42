"""The search API: one Searcher per process and database (it holds the query-vector cache), and the
search modes it dispatches to. A mode is anything with a `name` and `run(searcher, request)`; add
one to MODES (or pass `modes=` to a Searcher)."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from semindex.database import Database
from semindex.errors import InvalidInput
from semindex.search.fanout import SearchFanOut, default_fanout
from semindex.search.fusion import FusionSettings, fuse
from semindex.search.lexical import LexicalResult, LexicalSearch, QueryTexts
from semindex.search.planner import PlannerSettings
from semindex.search.query import parse_query
from semindex.search.query_cache import QueryVectorCache
from semindex.search.ranking import RANKING_DEPTH, Ranking
from semindex.search.request import MAX_K, Scope, SearchRequest
from semindex.search.response import SPARE_HITS, Hit, ResponseMeta, SearchResponse
from semindex.search.semantic import SemanticResult, SemanticSearch
from semindex.vectors.version import EmbeddingVersion


class SearchMode(Protocol):
    name: str

    def run(self, searcher: Searcher, request: SearchRequest, vector: np.ndarray | None = None) -> SearchResponse:
        """The response; `vector` is the query's vector when the caller already has it."""
        ...


class LexicalMode:
    name = "lexical"

    def ranking(self, searcher: Searcher, request: SearchRequest, depth: int) -> Ranking:
        """The request's records ranked `depth` deep, hydrated a page at a time (Ranking.page)."""
        if not parse_query(request.query).searchable:
            raise InvalidInput(f"the query {request.query[:80]!r} has no word to search for once punctuation and operators are set aside")
        result = searcher.lexical.search(replace(request, unit="records"), k=depth, hydrate=False)
        meta = ResponseMeta(request.mode, request.k, lexical=result.meta, timings_ms={"lexical": result.milliseconds})
        return Ranking(result.hits, meta, result.texts)

    def run(self, searcher: Searcher, request: SearchRequest, vector: np.ndarray | None = None) -> SearchResponse:
        if not parse_query(request.query).searchable:
            raise InvalidInput(f"the query {request.query[:80]!r} has no word to search for once punctuation and operators are set aside")
        result = searcher.lexical.search(request, chunks=request.unit == "chunks")
        return SearchResponse(result.hits, ResponseMeta(
            request.mode, request.k, lexical=result.meta, unit=request.unit, timings_ms={"lexical": result.milliseconds}
        ))


class SemanticMode:
    name = "semantic"

    def ranking(self, searcher: Searcher, request: SearchRequest, depth: int) -> Ranking:
        version = searcher.semantic.resolve_version(request.version_key)
        result = searcher.semantic.search(version, request.query, request.scope, depth, hydrate=False)
        meta = ResponseMeta(request.mode, request.k, version=result.version, semantic_plans=result.plans,
                            below_min_similarity=result.below_min_similarity, timings_ms=result.timings_ms)
        return Ranking(result.hits, meta)

    def run(self, searcher: Searcher, request: SearchRequest, vector: np.ndarray | None = None) -> SearchResponse:
        version = searcher.semantic.resolve_version(request.version_key)
        result = searcher.semantic.search(version, request.query, request.scope, request.k,
                                          chunks=request.unit == "chunks", vector=vector)
        return SearchResponse(result.hits, ResponseMeta(
            request.mode, request.k, version=result.version, semantic_plans=result.plans, unit=request.unit,
            below_min_similarity=result.below_min_similarity, timings_ms=result.timings_ms,
        ))


class HybridMode:
    """Lexical and semantic concurrently, each as deep as the public maximum, fused by the
    version's declared method and weights (or the request's); only the fused page is hydrated
    (a lexical record's best chunk and highlighted snippet, a semantic chunk's place and snippet)."""

    name = "hybrid"

    def run(self, searcher: Searcher, request: SearchRequest, vector: np.ndarray | None = None) -> SearchResponse:
        parts = hybrid_parts(searcher, request, vector, hydrate=request.unit == "chunks")
        page = fuse(parts.fusion, parts.lexical.hits, parts.semantic.hits, page=request.k, chunks=request.unit == "chunks")
        page = searcher.hydrate(page[: request.k + SPARE_HITS], parts.lexical.texts)
        semantic, lexical = parts.semantic, parts.lexical
        return SearchResponse(page[: request.k], ResponseMeta(
            request.mode, request.k, version=semantic.version, semantic_plans=semantic.plans,
            lexical=lexical.meta, fusion=parts.fusion.as_dict(), unit=request.unit,
            below_min_similarity=semantic.below_min_similarity,
            timings_ms={**semantic.timings_ms, "lexical": lexical.milliseconds},
        ))


@dataclass
class HybridParts:
    fusion: FusionSettings
    lexical: LexicalResult
    semantic: SemanticResult


def hybrid_parts(searcher: Searcher, request: SearchRequest, vector: np.ndarray | None, *, hydrate: bool) -> HybridParts:
    """Hybrid search's ingredients: the fusion to use, and lexical and semantic search run
    concurrently, each MAX_K deep (hydrated only when asked)."""
    version = searcher.semantic.resolve_version(request.version_key)
    chunks = request.unit == "chunks"
    lexical: dict[str, LexicalResult | BaseException] = {}

    def run_lexical() -> None:
        try:
            lexical["result"] = searcher.lexical.search(request, k=MAX_K, chunks=chunks, hydrate=hydrate)
        except BaseException as error:  # raised again in the caller's thread
            lexical["result"] = error

    # Its own thread, not the fan-out: both sides fan out through the bounded queue themselves.
    worker = threading.Thread(target=run_lexical, name="semindex-hybrid-lexical")
    worker.start()
    semantic = searcher.semantic.search(version, request.query, request.scope, MAX_K, chunks=chunks, vector=vector,
                                        hydrate=hydrate)
    worker.join()
    lexical_result = lexical["result"]
    if isinstance(lexical_result, BaseException):
        raise lexical_result
    return HybridParts(fusion_settings(version, request), lexical_result, semantic)


def fusion_settings(version: EmbeddingVersion, request: SearchRequest) -> FusionSettings:
    """The version's declared fusion (semindex's default when it declares none), with the request's
    method and weights where it gives them."""
    declared = FusionSettings.from_mapping(version.thresholds.get("fusion"), f"version {version.version_key!r} fusion")
    overrides = {name: getattr(request, attribute) for name, attribute in (
        ("method", "fusion"), ("lexical_weight", "lexical_weight"), ("semantic_weight", "semantic_weight"))
        if getattr(request, attribute) is not None}
    return replace(declared, **overrides) if overrides else declared


MODES: dict[str, SearchMode] = {mode.name: mode for mode in (LexicalMode(), SemanticMode(), HybridMode())}


class Searcher:
    def __init__(
        self,
        db: Database,
        *,
        planner: PlannerSettings = PlannerSettings(),
        fanout: SearchFanOut | None = None,
        cache: QueryVectorCache | None = None,
        modes: Mapping[str, SearchMode] = MODES,
    ) -> None:
        self.db = db
        self.planner = planner
        self.fanout = fanout or default_fanout()
        self.cache = cache or QueryVectorCache()
        self.modes = modes
        self.semantic = SemanticSearch(db, planner, self.fanout, self.cache)
        self.lexical = LexicalSearch(db, self.fanout)

    def rank_every_mode(self, request: SearchRequest, *, vector: np.ndarray | None = None,
                        lexical: list[Hit] | None = None) -> dict[str, list[Hit]]:
        """The request's best records by lexical, semantic and hybrid search (not hydrated: records
        and scores, for an evaluation), from one lexical and one semantic search: hybrid fuses them
        exactly as HybridMode does. Lexical ranking does not depend on the version: `lexical` (the
        "lexical_depth" list of an earlier call with the same query and scope) is reused when given."""
        request = replace(request.validated(), unit="records")
        if lexical is None:
            parts = hybrid_parts(self, request, vector, hydrate=False)
            lexical = parts.lexical.hits
            semantic, settings = parts.semantic, parts.fusion
        else:
            version = self.semantic.resolve_version(request.version_key)
            semantic = self.semantic.search(version, request.query, request.scope, MAX_K, vector=vector, hydrate=False)
            settings = fusion_settings(version, request)
        semantic = semantic.hits
        return {
            "lexical": lexical[: request.k],
            "semantic": semantic[: request.k],
            "hybrid": fuse(settings, [_copy(hit) for hit in lexical], [_copy(hit) for hit in semantic],
                           page=request.k)[: request.k],
            "lexical_depth": lexical,
        }

    def ranking(self, request: SearchRequest, depth: int = RANKING_DEPTH) -> Ranking:
        """The request's records ranked up to `depth` deep, for paging (a cursor's snapshot): the
        modes that define `ranking` (lexical and semantic) have it; Ranking.page hydrates a page."""
        request = replace(request.validated(), unit="records")
        mode = self.modes.get(request.mode)
        if mode is None:
            raise InvalidInput(f"mode {request.mode!r} is not one of {', '.join(self.modes)}")
        if not hasattr(mode, "ranking"):
            raise InvalidInput(f"mode {request.mode!r} has no deep ranking (no cursor); ask for at most {MAX_K} hits")
        if not 1 <= depth <= RANKING_DEPTH:
            raise InvalidInput(f"depth={depth} must be between 1 and {RANKING_DEPTH}")
        started = time.perf_counter()
        ranking = mode.ranking(self, request, depth)
        ranking.meta.timings_ms["total"] = round(1000 * (time.perf_counter() - started), 2)
        return ranking

    def page(self, ranking: Ranking, offset: int, limit: int) -> list[Hit]:
        """Hits offset+1 .. offset+limit of a ranking, hydrated now (a record deleted since the
        ranking drops out)."""
        return self.hydrate(ranking.hits[offset: offset + limit + SPARE_HITS], ranking.texts)[:limit]

    def hydrate(self, hits: list[Hit], texts: QueryTexts | None) -> list[Hit]:
        """Ranked hits with their place and snippet: a semantic chunk's, a lexical record's best chunk
        with the query's terms highlighted (`texts`, when lexical search ranked any); one deleted since
        it was ranked drops out, so callers pass a few more than they show."""
        hits = self.semantic.hydrate(hits)
        return hits if texts is None else self.lexical.hydrate(hits, texts)

    def search(self, request: SearchRequest, *, vector: np.ndarray | None = None) -> SearchResponse:
        """Answer `request`; `vector` is its query's vector under the version when the caller has it
        (an evaluation encodes its queries in one batch)."""
        request = request.validated()
        mode = self.modes.get(request.mode)
        if mode is None:
            raise InvalidInput(f"mode {request.mode!r} is not one of {', '.join(self.modes)}")
        started = time.perf_counter()
        response = mode.run(self, request, vector)
        response.meta.timings_ms["total"] = round(1000 * (time.perf_counter() - started), 2)
        return response


def _copy(hit: Hit) -> Hit:
    """A hit fusion may merge into without changing the original (fusion updates scores in place)."""
    return replace(hit, scores=dict(hit.scores), ranks=dict(hit.ranks), matched_fields=list(hit.matched_fields))


_searchers: weakref.WeakKeyDictionary[Database, Searcher] = weakref.WeakKeyDictionary()
_searchers_lock = threading.Lock()


def searcher_for(db: Database) -> Searcher:
    """The process-wide Searcher of a Database (so its query-vector cache is shared)."""
    with _searchers_lock:
        searcher = _searchers.get(db)
        if searcher is None:
            searcher = _searchers[db] = Searcher(db)
        return searcher


def search(db: Database, request: SearchRequest) -> SearchResponse:
    return searcher_for(db).search(request)


def semantic_search(db: Database, query: str, *, k: int = 10, version_key: str | None = None, scope: Scope = Scope()) -> list[Hit]:
    return search(db, SearchRequest(query, mode="semantic", k=k, version_key=version_key, scope=scope)).hits


