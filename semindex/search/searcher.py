"""The search API: one Searcher per process and database (it holds the query-vector cache), and the
search modes it dispatches to. A mode is anything with a `name` and `run(searcher, request)`; add
one to MODES (or pass `modes=` to a Searcher)."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Mapping
from typing import Protocol

from semindex.database import Database
from semindex.errors import InvalidInput
from semindex.search.fanout import SearchFanOut, default_fanout
from semindex.search.fusion import FUSERS, RankedList, best_per_record
from semindex.search.lexical import LexicalResult, LexicalSearch
from semindex.search.planner import PlannerSettings
from semindex.search.query_cache import QueryVectorCache
from semindex.search.request import MAX_K, Scope, SearchRequest
from semindex.search.response import Hit, ResponseMeta, SearchResponse
from semindex.search.semantic import SemanticSearch


class SearchMode(Protocol):
    name: str

    def run(self, searcher: Searcher, request: SearchRequest) -> SearchResponse: ...


class LexicalMode:
    name = "lexical"

    def run(self, searcher: Searcher, request: SearchRequest) -> SearchResponse:
        result = searcher.lexical.search(request)
        return SearchResponse(result.hits, ResponseMeta(
            request.mode, request.k, lexical=result.meta, timings_ms={"lexical": result.milliseconds}
        ))


class SemanticMode:
    name = "semantic"

    def run(self, searcher: Searcher, request: SearchRequest) -> SearchResponse:
        result = searcher.semantic.search(request.query, request.scope, request.k, request.version_key)
        return SearchResponse(result.hits, ResponseMeta(
            request.mode, request.k, version=result.version, semantic_plans=result.plans,
            below_min_similarity=result.below_min_similarity, timings_ms=result.timings_ms,
        ))


class HybridMode:
    """Lexical and semantic concurrently, each as deep as the public maximum (modes return chunks,
    and fusion keeps one per record, so records with several matching chunks must not shorten the
    page), fused by the request's method and weights."""

    name = "hybrid"

    def run(self, searcher: Searcher, request: SearchRequest) -> SearchResponse:
        lexical: dict[str, LexicalResult | BaseException] = {}

        def run_lexical() -> None:
            try:
                lexical["result"] = searcher.lexical.search(request, k=MAX_K)
            except BaseException as error:  # raised again in the caller's thread
                lexical["result"] = error

        # Its own thread, not the fan-out: both sides fan out through the bounded queue themselves.
        worker = threading.Thread(target=run_lexical, name="semindex-hybrid-lexical")
        worker.start()
        semantic = searcher.semantic.search(request.query, request.scope, MAX_K, request.version_key)
        worker.join()
        lexical_result = lexical["result"]
        if isinstance(lexical_result, BaseException):
            raise lexical_result
        fused = FUSERS[request.fusion]([
            RankedList("lexical", best_per_record(lexical_result.hits, "lexical"), request.lexical_weight),
            RankedList("semantic", best_per_record(semantic.hits, "semantic"), request.semantic_weight),
        ])
        return SearchResponse(fused[: request.k], ResponseMeta(
            request.mode, request.k, version=semantic.version, semantic_plans=semantic.plans,
            lexical=lexical_result.meta, fusion=request.fusion, below_min_similarity=semantic.below_min_similarity,
            timings_ms={**semantic.timings_ms, "lexical": lexical_result.milliseconds},
        ))


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

    def search(self, request: SearchRequest) -> SearchResponse:
        request = request.validated()
        mode = self.modes.get(request.mode)
        if mode is None:
            raise InvalidInput(f"mode {request.mode!r} is not one of {', '.join(self.modes)}")
        started = time.perf_counter()
        response = mode.run(self, request)
        response.meta.timings_ms["total"] = round(1000 * (time.perf_counter() - started), 2)
        return response


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


