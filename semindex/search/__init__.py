"""Search: lexical, semantic and hybrid, over one embedding version, within a scope.

  request.py     Scope, SearchRequest and parse_request (one parser for the CLI and HTTP)
  response.py    Hit, SearchResponse, the typed ResponseMeta
  searcher.py    Searcher and the search modes it dispatches to
  lexical.py     websearch syntax over the scoped GIN index
  semantic.py    plans on engines, merged, never short
  planner.py     which plan (exact, partial, ann, global) and which engine per source
  engine.py      the SemanticEngine seam; engines.py its registry; pgvector_engine.py, scan_engine.py
  fusion.py      RRF and interleave over any number of ranked lists
  hydration.py   chunk ids to hits
"""

from semindex.search.planner import PlannerSettings
from semindex.search.request import MAX_K, Scope, SearchRequest, parse_request
from semindex.search.response import Hit, ResponseMeta, SearchResponse
from semindex.search.searcher import MODES, Searcher, search, searcher_for, semantic_search
from semindex.search.semantic import overscan as semantic_overscan

__all__ = [
    "MAX_K", "MODES", "Hit", "PlannerSettings", "ResponseMeta", "Scope", "SearchRequest", "SearchResponse",
    "Searcher", "parse_request", "search", "searcher_for", "semantic_overscan", "semantic_search",
]
