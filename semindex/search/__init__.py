"""Search: lexical, semantic and hybrid, over one embedding version, within a scope.

  request.py     Scope, SearchRequest and parse_request (one parser for the CLI and HTTP)
  response.py    Hit (a record, or a chunk on request), SearchResponse, the typed ResponseMeta
  searcher.py    Searcher and the search modes it dispatches to
  query.py       the lexical query language's parser (nothing crashes it)
  lexical.py     BM25 over record fields, with per-source term statistics
  semantic.py    plans on engines, merged, k records whenever k match
  sources.py     the scope's sources; version_target.py a version's vector table as an engine target
  planner.py     which plan (exact, partial, ann, global) and which engine per source
  engine.py      the SemanticEngine seam; engines.py its registry; pgvector_engine.py, scan_engine.py,
                 zvec_engine.py (zvec generations from semindex.ann_substrate, re-ranked in PostgreSQL)
  ranking.py     a ranked list kept for paging (the HTTP service's cursor snapshots)
  fusion.py      score blend, RRF and interleave over any number of ranked lists
  hydration.py   chunk ids to hits
"""

from semindex.search.planner import PlannerSettings
from semindex.search.request import MAX_K, Scope, SearchRequest, parse_request
from semindex.search.response import Hit, ResponseMeta, SearchResponse
from semindex.search.searcher import (
    MODES,
    Searcher,
    search,
    searcher_for,
    semantic_search,
)
from semindex.search.semantic import overscan as semantic_overscan

__all__ = [
    "MAX_K", "MODES", "Hit", "PlannerSettings", "ResponseMeta", "Scope", "SearchRequest", "SearchResponse",
    "Searcher", "parse_request", "search", "searcher_for", "semantic_overscan", "semantic_search",
]
