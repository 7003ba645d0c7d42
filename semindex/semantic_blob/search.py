"""Search over an adopted semantic_search_blob table: an adapter over the search planner and engines.

The table holds rows of several dimensions in one untyped `vector` column (or still JSONB, without
pgvector), cosine only, with a partial expression HNSW index for one dimension. A query sees the rows
of its own dimension, of one connector instance, of the given scope keys and record keys. The
planner's rule decides exact or ANN from a capped count of the scope; the pgvector engine (or the scan
engine, for a JSONB table) answers; a short ANN answer is answered again exactly.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Sequence

import numpy as np

from semindex.database import Database
from semindex.errors import InvalidInput
from semindex.search.engine import NearestRequest, PlanKind, ScannedRow, SemanticPlan
from semindex.search.engines import PGVECTOR, exact_engine
from semindex.search.planner import PlannerSettings, choose_kind
from semindex.search.semantic import nearest_never_short
from semindex.semantic_blob.table import (
    DEFAULT_TABLE,
    MAX_HNSW_DIMENSIONS,
    MAX_VECTOR_DIMENSIONS,
    BlobState,
    inspect,
)
from semindex.sql_files import statement
from semindex.vectors.metric import METRICS
from semindex.vectors.storage import storage_named

MAX_K = 1000
# A JSONB text that is a flat array of JSON numbers and nothing else (no strings, null, true, [..]).
_NUMERIC_ARRAY_TEXT = re.compile(r"\[[0-9eE+\-., ]*\]")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class BlobTable:
    """The adopted table as a VectorTarget, bound to one query's dimension and scope."""

    def __init__(self, state: BlobState, dimensions: int, params: dict) -> None:
        self.state = state
        self.name = state.table
        self.metric = METRICS["cosine"]  # the reference server's only metric
        self.dimensions = dimensions
        self.params = params

    def _parts(self) -> dict:
        return {"table": self.state.table, "column": self.state.column, "dimensions": self.dimensions}

    def nearest_statements(self, plan: SemanticPlan, per_record: bool = False):
        name = "search_exact" if plan.kind is PlanKind.EXACT else "search_ann"
        return [(statement("semantic_blob", name, **self._parts()), self.params)]

    def scan_statements(self, plan: SemanticPlan):
        return [(statement("semantic_blob", "search_jsonb_rows", **self._parts()), {**self.params, "dimensions": self.dimensions})]

    def parse(self, rows: Sequence[ScannedRow]) -> tuple[list[ScannedRow], np.ndarray]:
        """The rows pgvector could hold, parsed: flat arrays of JSON numbers within float4 range (the
        rows the migration keeps), checked on the text so valid rows are parsed once, in C."""
        kept = [row for row in rows if _NUMERIC_ARRAY_TEXT.fullmatch(row.embedding)]
        if not kept:
            return [], np.empty((0, self.dimensions))
        # parse_int=float: an integer too large for a double becomes inf instead of an OverflowError.
        matrix = np.array(json.loads("[" + ",".join(row.embedding for row in kept) + "]", parse_int=float), dtype=np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # overflow to inf is what we test for
            in_range = np.isfinite(matrix.astype(np.float32)).all(axis=1)
        if not in_range.all():
            kept = [row for row, ok in zip(kept, in_range, strict=True) if ok]
            matrix = matrix[in_range]
        return kept, matrix


def search_blob(
    db: Database,
    query_vector: Sequence[float] | np.ndarray,
    *,
    k: int,
    connector_instance_id: str,
    scope_keys: Sequence[str] | None = None,
    record_keys: Sequence[str] | None = None,
    table: str = DEFAULT_TABLE,
    column: str | None = None,
    index_name: str | None = None,
    settings: PlannerSettings = PlannerSettings(),
) -> list[tuple[str, str, float]]:
    """The k nearest rows by cosine distance: [(record_key, scope_key, distance)], nearest first.

    Ties go by record key, then scope key; a zero vector's distance is NaN and reported as inf,
    last. Whenever k rows match, k come back.
    """
    query = np.asarray(query_vector, dtype=np.float64).ravel()
    if query.size == 0 or query.size > MAX_VECTOR_DIMENSIONS:
        raise InvalidInput(f"the query vector has {query.size} dimensions; pgvector allows 1 to {MAX_VECTOR_DIMENSIONS}")
    if not np.isfinite(query).all() or np.abs(query).max() > _FLOAT32_MAX:
        raise InvalidInput("the query vector has NaN, infinite or out-of-float4-range values")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidInput(f"k={k!r} must be between 1 and {MAX_K}")
    params = {
        "instance": connector_instance_id,
        "scope_keys": list(scope_keys or ()),
        "record_keys": list(record_keys or ()),
    }
    dimensions = int(query.size)
    with db.connection() as conn:
        state = inspect(conn, table, dimensions, column, index_name)
    storage = storage_named(state.column_type)  # the adopted column's own type: vector, or still jsonb
    exact = exact_engine(storage)
    kind = PlanKind.EXACT
    if storage.ann_indexes and not params["record_keys"] and dimensions <= MAX_HNSW_DIMENSIONS and state.index_valid:
        kind = choose_kind(_capped_scope_count(db, state, params, settings), state.row_estimate,
                           record_keys=False, partial_index=False, settings=settings)
    plan = SemanticPlan(kind, PGVECTOR if kind is not PlanKind.EXACT else exact, ())
    if db.vector_mode is None:  # opened without bootstrap: learn the pgvector version once (iterative scans)
        db.probe_vector_mode()
    request = NearestRequest(BlobTable(state, dimensions, params), plan, query, k, settings.window_for(plan.kind),
                             settings.max_ef_search)
    found, _ = nearest_never_short(db, request, exact)
    return [(candidate.record_key, str(candidate.key), candidate.order[0]) for candidate in found]


def _capped_scope_count(db: Database, state: BlobState, params: dict, settings: PlannerSettings) -> int:
    """The scope's rows, counted only up to the size where a filtered graph walk starts to pay."""
    cap = max(settings.exact_threshold, math.ceil(settings.min_ann_share * state.row_estimate)) + 1
    with db.connection() as conn:
        return conn.execute(statement("semantic_blob", "scope_count", table=state.table), {**params, "cap": cap}).fetchone()[0]
