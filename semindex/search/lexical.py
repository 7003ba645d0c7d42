"""Lexical search: websearch syntax over the scope-shaped GIN index, one query per source.

A candidate window (default 200) is taken before ts_rank_cd ranks, except when record keys are given
(the caller bounded the candidates: every match is ranked). With no instance or stream in the scope
there is one query over every source. Snippets are cut for the final page only; parallel workers are
off for the transaction (they need /dev/shm and die on broad terms in small containers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from psycopg.rows import class_row

from semindex.database import Database
from semindex.search.fanout import SearchFanOut
from semindex.search.hydration import chunk_details, hit_from
from semindex.search.request import SearchRequest
from semindex.search.response import Hit, LexicalMeta
from semindex.search.semantic import overscan
from semindex.search.sources import sources_in_scope
from semindex.sql_files import statement


@dataclass(frozen=True)
class LexicalRow:
    chunk_id: int
    rank: float
    candidate_count: int


@dataclass
class LexicalResult:
    hits: list[Hit]
    meta: LexicalMeta
    milliseconds: float


class LexicalSearch:
    def __init__(self, db: Database, fanout: SearchFanOut) -> None:
        self.db = db
        self.fanout = fanout

    def search(self, request: SearchRequest, k: int | None = None) -> LexicalResult:
        started = time.perf_counter()
        k = k or request.k
        scope = request.scope
        window = None if scope.record_keys else request.lexical_window
        # No instance or stream in the scope: one query over every source; otherwise one per source.
        sources = (
            [(source.connector_instance_id, source.stream) for source in sources_in_scope(self.db, scope)]
            if scope.names_sources
            else [None]
        )
        params = {
            "query": request.query,
            "fields": list(scope.fields),
            "record_keys": list(scope.record_keys),
            "window": window,
            "limit": overscan(k),
        }

        def run(source: tuple[str, str] | None) -> list[LexicalRow]:
            with self.db.connection() as conn:
                conn.execute(statement("search", "lexical_settings"))
                if source is None:
                    query, source_params = statement("search", "lexical_global"), params
                else:
                    conn.execute(statement("search", "lexical_source_settings"))
                    query = statement("search", "lexical_source")
                    source_params = {**params, "instance": source[0], "stream": source[1]}
                return conn.cursor(row_factory=class_row(LexicalRow)).execute(query, source_params).fetchall()

        rows: list[LexicalRow] = []
        windowed = []
        for source, source_rows in zip(sources, self.fanout.map(run, sources), strict=True):
            if window is not None and source_rows and source_rows[0].candidate_count >= window:
                windowed.append("*" if source is None else f"{source[0]}/{source[1]}")
            rows.extend(source_rows)
        meta = LexicalMeta(
            windowed=bool(windowed),
            windowed_sources=windowed,
            candidate_window=window,
            path="exact" if window is None else "windowed",
        )
        details = chunk_details(self.db, [row.chunk_id for row in rows])
        ranked = sorted(
            (row for row in rows if row.chunk_id in details),
            key=lambda row: (-row.rank, details[row.chunk_id].record_key, row.chunk_id),
        )[:k]
        with self.db.connection() as conn:
            snippets = dict(conn.execute(
                statement("search", "lexical_snippets"), (request.query, [row.chunk_id for row in ranked])
            ).fetchall())
        hits = []
        for rank, row in enumerate(ranked, start=1):
            hit = hit_from(details[row.chunk_id], snippets.get(row.chunk_id))
            hit.scores = {"lexical": float(row.rank)}
            hit.ranks = {"lexical": rank}
            hits.append(hit)
        return LexicalResult(hits, meta, round(1000 * (time.perf_counter() - started), 2))
