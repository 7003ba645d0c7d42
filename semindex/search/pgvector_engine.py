"""The pgvector engine: exact scans and HNSW walks, in SQL.

ANN plans run with hnsw.ef_search from the candidate window and, on pgvector 0.8, iterative scans in
strict order (a filtered walk keeps going until enough rows pass the filter). A walk that still
returns short is tried once more with the widest window; what is still short then is the caller's
to answer exactly.
"""

from __future__ import annotations

from psycopg.rows import class_row

from semindex.database import Database
from semindex.search.engine import Candidate, NearestRequest, PlanKind, best
from semindex.sql_files import statement
from semindex.vectors.storage import VectorStorage

# pgvector's upper bound for hnsw.ef_search; iterative scans go on past it when a filter needs them to.
MAX_EF_SEARCH = 1000


class PgvectorEngine:
    name = "pgvector"
    kinds = frozenset(PlanKind)

    def serves(self, storage: VectorStorage) -> bool:
        return storage.ann_indexes

    def label(self, kind: PlanKind) -> str:
        return kind.value

    def nearest(self, db: Database, request: NearestRequest) -> list[Candidate]:
        if request.plan.kind is PlanKind.EXACT:
            statements = request.target.nearest_statements(request.plan, request.per_record)
            return best(self._run(db, statements, request, ef_search=None), request.limit, per_record=request.per_record)
        statements = request.target.nearest_statements(request.plan)
        first = min(MAX_EF_SEARCH, max(request.window, request.limit))
        candidates: list[Candidate] = []
        for ef_search in sorted({first, min(MAX_EF_SEARCH, max(first, request.max_window))}):
            candidates = best(self._run(db, statements, request, ef_search=ef_search), request.limit)
            if len(candidates) >= request.limit:
                break
        return candidates

    def _run(self, db: Database, statements, request: NearestRequest, *, ef_search: int | None) -> list[Candidate]:
        rows: list[Candidate] = []
        with db.connection() as conn:
            if ef_search is not None:
                conn.execute(statement("search", "ann_settings"), (str(ef_search), str(max(20_000, 100 * ef_search))))
                if db.hnsw_iterative_scan:
                    conn.execute(statement("search", "iterative_scan"))
            cursor = conn.cursor(row_factory=class_row(Candidate))
            for query, params in statements:
                # Never prepared, so planned for these values every time: a generic plan can neither
                # prove a hot source's partial-index predicate from bind parameters (it would walk the
                # version's whole graph) nor fold the scope's empty-array tests (it would scan the
                # whole source instead of its index range). psycopg prepares a statement run often.
                rows.extend(cursor.execute(query, {**params, "query": request.query, "limit": request.limit},
                                           prepare=False).fetchall())
        return rows
