"""The scan engine: exact nearest neighbours by streaming the scoped rows into numpy.

For databases without pgvector (JSONB storage) and for adopted JSONB tables: the rows stream through a
server-side cursor in batches, the target's metric ranks each batch, and a bounded best-`limit` is
kept, so every scoped row is ranked before anything is cut and memory stays at one batch.
"""

from __future__ import annotations

import numpy as np
from psycopg.rows import class_row

from semindex.database import Database
from semindex.search.engine import Candidate, NearestRequest, PlanKind, ScannedRow
from semindex.search.engine import best as best_of
from semindex.vectors.storage import VectorStorage

# Rows per fetch: 2,000 x 384 float64 is 6 MB of matrix.
FETCH_ROWS = 2000


class ScanEngine:
    name = "jsonb"
    kinds = frozenset({PlanKind.EXACT})

    def serves(self, storage: VectorStorage) -> bool:
        return True

    def label(self, kind: PlanKind) -> str:
        return f"{self.name}_{kind.value}"

    def nearest(self, db: Database, request: NearestRequest) -> list[Candidate]:
        limit, target = request.limit, request.target
        best: list[Candidate] = []  # sorted by Candidate.order, at most `limit` (records, with per_record)
        with db.connection() as conn:
            for query, params in target.scan_statements(request.plan):
                cursor = conn.cursor(name="semindex_scan", row_factory=class_row(ScannedRow))
                try:
                    cursor.execute(query, params)
                    while rows := cursor.fetchmany(FETCH_ROWS):
                        kept, matrix = target.parse(rows)
                        if not kept:
                            continue
                        distances = target.metric.distances(matrix, request.query)
                        # Only rows that can still enter the best `limit` (ties at the cut included):
                        # none worse than the current last, and (rows, not records) than the
                        # batch's own limit-th.
                        cut = best[-1].distance if len(best) == limit else np.inf
                        if len(kept) > limit and not request.per_record:
                            cut = min(cut, np.partition(distances, limit - 1)[limit - 1])
                        candidates = np.flatnonzero(distances <= cut) if np.isfinite(cut) else range(len(kept))
                        best = best_of(best + [kept[i].candidate(float(distances[i])) for i in candidates],
                                       limit, per_record=request.per_record)
                finally:
                    cursor.close()
        return best
