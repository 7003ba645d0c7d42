"""Data-quality gates: pandera schemas over sampled chunk and embedding frames, vector/chunk parity
and index validity. Each returns a verdict with diagnostics for the asset check's metadata.

pandas and pandera are imported when a check runs, not when Dagster loads the definitions (they
cost about half a second).

In JSONB mode (no pgvector) vectors are JSON arrays, checked by the same schema once parsed, and
there are no HNSW indexes to validate.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import math
from dataclasses import dataclass, field

import numpy as np
from psycopg.rows import class_row

from semindex import row_counts
from semindex.database import Database
from semindex.indexes import index_validity, is_ann_index_name
from semindex.relevance_metrics import distance_recall
from semindex.sql_files import statement
from semindex.vectors.storage import as_array, storage_for
from semindex.vectors.version import EmbeddingVersion


@dataclass
class Verdict:
    passed: bool
    summary: str
    diagnostics: dict = field(default_factory=dict)
    # The verdict's numbers under stable names, for plotting across check runs.
    metrics: dict[str, float | int] = field(default_factory=dict)


@functools.cache
def chunk_schema():
    import pandera.pandas as pa

    return pa.DataFrameSchema(
        {
            "chunk_id": pa.Column(int, pa.Check.gt(0), unique=True),
            "connector_instance_id": pa.Column(str, pa.Check.str_length(min_value=1)),
            "stream": pa.Column(str, pa.Check.str_length(min_value=1)),
            "record_key": pa.Column(str, pa.Check.str_length(min_value=1)),
            "field": pa.Column(str, pa.Check.str_length(min_value=1)),
            "chunk_no": pa.Column(int, pa.Check.ge(0)),
            "content": pa.Column(str, [
                pa.Check.str_length(min_value=1),
                pa.Check(lambda s: s == s.str.strip(), element_wise=False, error="content is not trimmed"),
            ]),
            "content_sha256_bytes": pa.Column(int, pa.Check.eq(32)),
            "semantic_key_bytes": pa.Column(int, pa.Check.eq(32)),
        },
        strict=True,
    )


def embedding_schema(dimensions: int, metric: str):
    import pandera.pandas as pa

    checks = [
        pa.Check(lambda frame: frame["dimensions"] == dimensions, error=f"vector dimension differs from {dimensions}"),
        pa.Check(lambda frame: frame["finite"], error="vector holds NaN or infinity"),
    ]
    if metric == "cosine":
        checks.append(pa.Check(lambda frame: (frame["norm"] - 1.0).abs() <= 1e-3, error="vector is not unit length"))
    return pa.DataFrameSchema(
        {"chunk_id": pa.Column(int, unique=True), "dimensions": pa.Column(int), "finite": pa.Column(bool), "norm": pa.Column(float)},
        checks=checks,
    )




def _sampled_vector(value) -> np.ndarray:
    """as_array, except that a value that is no flat array of numbers (JSONB mode) becomes an empty
    array, failing the dimension check with its chunk id instead of stopping the check."""
    try:
        vector = as_array(value)
    except (TypeError, ValueError):
        return np.empty(0)
    return vector if vector.ndim == 1 else np.empty(0)


def _id_draw(conn, table: str, rows: int, wanted: int) -> dict | None:
    """Parameters of a uniform draw of about `wanted` live ids from `table` holding `rows` rows: ids
    between its lowest and highest, enough draws for the gaps, at most 50 a wanted row."""
    low, high = conn.execute(statement("quality", "id_bounds", table=table)).fetchone()
    if not rows or low is None:
        return None
    span = high - low + 1
    draws = min(span, math.ceil(wanted * span / rows * 1.3) + 16, wanted * 50)
    return {"low": low, "high": high, "draws": draws, "limit": wanted}


def sample_percent(db: Database, table: str, wanted: int) -> float:
    with db.connection() as conn:
        estimate = conn.execute(statement("quality", "row_estimate"), (table,)).fetchone()
    rows = estimate[0] if estimate else 0
    return 100.0 if rows <= wanted else min(100.0, 300.0 * wanted / rows)


def _failure_cases(error) -> list[dict]:
    cases = error.failure_cases.head(10)
    return [{k: str(v) for k, v in row.items()} for row in cases.to_dict(orient="records")]


def check_chunk_frame(db: Database, sample_size: int = 2000) -> Verdict:
    live = row_counts.relation_rows(db, row_counts.CHUNKS)
    with db.connection() as conn:
        draw = _id_draw(conn, "semindex.chunks", live, sample_size)
        rows = conn.execute(statement("quality", "chunk_sample"), draw).fetchall() if draw else []
    return chunk_rows_verdict(rows)


def chunk_rows_verdict(rows: list[tuple]) -> Verdict:
    """The chunk schema over sampled rows (chunk_id, connector_instance_id, stream, record_key, field,
    chunk_no, content, content_sha256, semantic_key)."""
    import pandas as pd
    import pandera.pandas as pa

    schema = chunk_schema()
    frame = pd.DataFrame(
        [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], len(r[7]), len(r[8])) for r in rows],
        columns=list(schema.columns),
    )
    if frame.empty:
        return Verdict(False, "no chunks to check", {"sampled": 0}, {"sampled": 0})
    frame = frame.astype({"chunk_id": int, "chunk_no": int, "content_sha256_bytes": int, "semantic_key_bytes": int})
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as error:
        return Verdict(False, f"{len(error.failure_cases)} chunk schema failures",
                       {"sampled": len(frame), "failures": _failure_cases(error)},
                       {"sampled": len(frame), "failure_cases": len(error.failure_cases)})
    return Verdict(True, f"{len(frame)} sampled chunks match the schema", {"sampled": len(frame)},
                   {"sampled": len(frame), "failure_cases": 0})


def check_embedding_frame(db: Database, version: EmbeddingVersion, sample_size: int = 2000) -> Verdict:
    live = row_counts.vector_rows(db, version)
    with db.connection() as conn:
        draw = _id_draw(conn, version.vectors_table, live, sample_size)
        rows = conn.execute(statement("quality", "vector_sample", vectors=version.vectors_table), draw).fetchall() if draw else []
    return vector_rows_verdict(version, rows)


def vector_rows_verdict(version: EmbeddingVersion, rows: list[tuple]) -> Verdict:
    """The embedding schema over sampled (chunk_id, embedding) rows of the version."""
    import pandas as pd
    import pandera.pandas as pa

    if not rows:
        return Verdict(False, f"version {version.version_key!r} has no vectors", {"sampled": 0}, {"sampled": 0})
    vectors = [_sampled_vector(row[1]) for row in rows]
    frame = pd.DataFrame(
        {
            "chunk_id": [row[0] for row in rows],
            "dimensions": [len(v) for v in vectors],
            "finite": [bool(np.isfinite(v).all()) for v in vectors],
            "norm": [float(np.linalg.norm(v)) for v in vectors],
        }
    )
    try:
        embedding_schema(version.dimensions, version.distance_metric).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as error:
        return Verdict(False, f"{len(error.failure_cases)} embedding schema failures",
                       {"sampled": len(frame), "failures": _failure_cases(error)},
                       {"sampled": len(frame), "failure_cases": len(error.failure_cases)})
    norms = frame["norm"]
    figures = {"sampled": len(frame), "norm_min": float(norms.min()), "norm_max": float(norms.max())}
    return Verdict(
        True,
        f"{len(frame)} sampled vectors: {version.dimensions} dimensions, finite, norms {norms.min():.4f}..{norms.max():.4f}",
        figures,
        {**figures, "failure_cases": 0},
    )


# The bounded parity check looks only at what changed; a full one still runs at least this often, and
# whenever asked (check_parity(full=True)).
FULL_PARITY_EVERY = dt.timedelta(days=7)


@dataclass(frozen=True)
class ParityState:
    """A version's last passing parity check (semindex.parity_verified)."""

    chunk_watermark: int
    horizon: str
    full_verified_at: dt.datetime
    full_age: dt.timedelta


@dataclass(frozen=True)
class ParityCut:
    chunk_watermark: int
    horizon: str


@dataclass(frozen=True)
class ParityCounts:
    missing: int
    orphaned: int
    checked: int | None
    truncated: bool


def check_parity(db: Database, version: EmbeddingVersion, *, full: bool | None = None) -> Verdict:
    """Once the backfill is done, every live chunk has exactly one vector: none missing, none orphaned.

    full=True reads both tables whole. Otherwise (full=None) the check is bounded by what changed
    since the version's last passing check, unless there is none, the last full one is older than
    FULL_PARITY_EVERY, the vector table was only now counted, a TRUNCATE happened, or the kept row
    counts of chunks and vectors disagree afterwards; then it is full. full=False is bounded whenever
    a passing check exists.

    Why the bounded check answers what the full one would: parity holds id by id (an id has a chunk
    exactly when it has a vector), and held for every id at the last passing check. An id's presence
    in either table changes only by an insert, a delete, an update of chunk_id or a TRUNCATE. The
    counting triggers of both tables (sql/schema.sql) log, in the writing transaction, every delete
    and moved id and every insert at or below the verified watermark; the bounded check looks at
    every id logged since the last check's horizon and at every id above its watermark. An id it
    does not look at was neither written above the watermark nor logged, so it is in both tables
    exactly as it was when last verified: consistent. The watermark and horizon are read under the
    chunk writer's lock (every writer before has committed, every one after takes higher ids), and
    both are conservative (taken before the check), so a write racing a check is looked at next time.
    Writes that bypass triggers (session_replication_role = replica, disabled triggers) bypass the
    foreign key too; the kept counts then disagree, or the periodic full check finds them.
    """
    # Counting the vector table (its triggers also log its changes) comes before any cut.
    counted_now = row_counts.count_relation(db, version.vectors_table, "vectors", version.version_id)
    with db.connection() as conn:
        watermark = conn.execute(statement("vectors", "watermark"), (version.version_id,)).fetchone()
        pending = conn.execute(statement("vectors", "pending_count"), (watermark[0] if watermark else 0,)).fetchone()[0]
        state = conn.cursor(row_factory=class_row(ParityState)).execute(
            statement("quality", "parity_state"), (version.version_id,)).fetchone()
    bounded = state is not None and not counted_now and (
        full is False or (full is None and state.full_age < FULL_PARITY_EVERY))
    with db.connection() as conn:
        conn.execute(statement("quality", "chunk_writer_lock"))
        cut = conn.cursor(row_factory=class_row(ParityCut)).execute(statement("quality", "parity_cut")).fetchone()
    counts = _parity_counts(db, version, state if bounded else None)
    if counts.truncated:
        bounded, counts = False, _parity_counts(db, version, None)
    chunks = row_counts.relation_rows(db, row_counts.CHUNKS)
    vectors = row_counts.relation_rows(db, version.vectors_table)
    if bounded and not pending and not counts.missing and not counts.orphaned and chunks != vectors:
        # Consistent changes but unequal totals: something escaped the log. The full check says what.
        bounded, counts = False, _parity_counts(db, version, None)
    mode = "changed" if bounded else "full"
    diagnostics = {"chunks": chunks, "vectors": vectors, "missing": counts.missing, "orphaned": counts.orphaned,
                   "backfill_pending": pending, "mode": mode, "checked_ids": counts.checked}
    # The backfill's lag: live chunks this version has no vector for yet.
    metrics = {"chunks": chunks, "vectors": vectors, "missing": counts.missing, "orphaned": counts.orphaned,
               "backfill_pending": pending, "lag_chunks": max(pending, counts.missing), "full_check": int(not bounded)}
    if pending:
        return Verdict(False, f"backfill of {version.version_key!r} is not done: {pending} chunks pending", diagnostics, metrics)
    if counts.missing or counts.orphaned:
        return Verdict(False, f"{counts.missing} chunks without a vector, {counts.orphaned} vectors without a chunk",
                       diagnostics, metrics)
    with db.connection() as conn:
        conn.execute(statement("quality", "record_parity"), {
            "version_id": version.version_id, "watermark": cut.chunk_watermark, "horizon": cut.horizon, "full": not bounded})
        conn.execute(statement("quality", "prune_chunk_id_changes"))
    checked = f"{counts.checked} changed chunk ids checked" if bounded else "checked in full"
    return Verdict(True, f"every one of {chunks} chunks has exactly one vector ({checked})", diagnostics, metrics)


def _parity_counts(db: Database, version: EmbeddingVersion, since: ParityState | None) -> ParityCounts:
    """Missing and orphaned ids: all of them (since=None), or among those that changed since."""
    with db.connection() as conn:
        cursor = conn.cursor(row_factory=class_row(ParityCounts))
        if since is None:
            return cursor.execute(statement("quality", "parity_full", vectors=version.vectors_table)).fetchone()
        return cursor.execute(statement("quality", "parity_changed", vectors=version.vectors_table),
                              {"horizon": since.horizon, "watermark": since.chunk_watermark}).fetchone()


def check_index_validity(db: Database, index_names: list[str]) -> Verdict:
    storage = storage_for(db)
    if not storage.ann_indexes:
        # No pgvector, so no HNSW: search is a brute-force scan and has no index to depend on.
        not_applicable = [name for name in index_names if is_ann_index_name(name)]
        index_names = [name for name in index_names if not is_ann_index_name(name)]
        if not index_names:
            return Verdict(
                True,
                "no ANN indexes to validate in JSONB mode (semantic search is a brute-force scan)",
                {"mode": storage.mode, "not_applicable": not_applicable},
                {"indexes": 0, "not_valid": 0},
            )
    states = index_validity(db, index_names)
    bad = {name: ("missing" if state is None else "invalid") for name, state in states.items() if not state}
    diagnostics = {name: ("valid" if state else "missing" if state is None else "invalid") for name, state in states.items()}
    metrics = {"indexes": len(states), "not_valid": len(bad)}
    if bad:
        return Verdict(False, f"{len(bad)} of {len(states)} managed indexes are not valid: {bad}", diagnostics, metrics)
    return Verdict(True, f"all {len(states)} managed indexes exist and are valid", diagnostics, metrics)


# A recall measurement is reused while the index is the one it measured, the threshold the same, and
# the rows written to the vectors since are at most this share of them (1,000 changed rows in a
# million move a graph's recall by nothing a 200-query sample can see), for at most this long.
DEFAULT_HNSW_RECALL = 0.95
REMEASURE_RECALL_AFTER_SHARE = 0.01
REMEASURE_RECALL_EVERY = dt.timedelta(days=7)


@dataclass(frozen=True)
class RecallState:
    """What an HNSW recall figure depends on: the index (its oid and file: a rebuild changes one),
    the vector table's writes (the kept `touched` count only grows) and the threshold judged against."""

    index: str
    touched: int
    rows: int
    threshold: float

    def still_measures(self, now: RecallState) -> bool:
        written = now.touched - self.touched
        return (self.index == now.index and self.threshold == now.threshold
                and 0 <= written <= REMEASURE_RECALL_AFTER_SHARE * max(now.rows, 1))


def _recall_state(db: Database, version: EmbeddingVersion, threshold: float) -> RecallState | None:
    with db.connection() as conn:
        index = conn.execute(statement("quality", "index_identity"),
                             (f"semindex.{version.hnsw_index_name}",) * 2).fetchone()[0]
    if index is None:
        return None
    count = row_counts.vector_count(db, version)
    return RecallState(index, count.touched, count.rows, float(threshold))


def _stored_recall_state(text: str) -> RecallState | None:
    """A stored state, or None when it is not one this code wrote (then the check measures again)."""
    try:
        return RecallState(**json.loads(text))
    except (ValueError, TypeError):
        return None


def hnsw_recall(
    db: Database,
    version: EmbeddingVersion,
    *,
    queries: int = 200,
    k: int = 10,
    ef_search: int = 100,
    threshold: float = 0.95,
) -> Verdict:
    """Mean recall@k of the version's HNSW index against an exact scan, over stored vectors as queries.

    In JSONB mode (no pgvector) there is no index: search is exact by construction, and the verdict
    says so instead of measuring brute force against itself.
    """
    storage = storage_for(db)
    if not storage.ann_indexes:
        vectors = row_counts.vector_rows(db, version)
        diagnostics = {"mode": storage.mode, "recall": "not applicable", "search": "exact brute force",
                       "vectors": vectors, "threshold": threshold}
        if not vectors:
            return Verdict(False, f"version {version.version_key!r} has no vectors to query", diagnostics, {"queries": 0})
        return Verdict(
            True,
            f"no HNSW index in JSONB mode: semantic search over {vectors} vectors is an exact brute force, "
            "so index recall is not applicable",
            diagnostics,
            {"queries": 0, "vectors": vectors},
        )
    percent = sample_percent(db, version.vectors_table, queries)
    top_k = statement("quality", "ann_top_k", vectors=version.vectors_table, operator=version.metric.sql_operator)
    with db.connection() as conn:
        sample = [row[0] for row in conn.execute(
            statement("quality", "query_sample", vectors=version.vectors_table), (percent, queries)
        )]
    recalls = []
    for query in sample:
        # Each side in a transaction of its own: the exact side's SET LOCAL must not leak into the
        # approximate side (inside one transaction it would survive a savepoint's release).
        with db.connection() as conn:
            conn.execute(statement("quality", "set_ef_search"), (str(ef_search),))
            approximate = [row[1] for row in conn.execute(top_k, (query, query, k))]
        with db.connection() as conn:
            conn.execute(statement("quality", "exact_scan"))
            exact = [row[1] for row in conn.execute(top_k, (query, query, k))]
        if exact:
            recalls.append(distance_recall(approximate, exact, k))
    if not recalls:
        return Verdict(False, f"version {version.version_key!r} has no vectors to query", {"queries": 0}, {"queries": 0})
    recall = sum(recalls) / len(recalls)
    diagnostics = {
        "queries": len(recalls),
        "k": k,
        "ef_search": ef_search,
        "recall": round(recall, 4),
        "worst_query_recall": round(min(recalls), 4),
        "threshold": threshold,
    }
    passed = recall >= threshold
    metrics = {f"recall@{k}": round(recall, 4), "worst_query_recall": round(min(recalls), 4), "queries": len(recalls),
               "threshold": float(threshold)}
    return Verdict(passed, f"recall@{k} {recall:.4f} {'>=' if passed else '<'} {threshold} over {len(recalls)} queries",
                   diagnostics, metrics)


def hnsw_recall_check(db: Database, version: EmbeddingVersion, *, threshold: float) -> Verdict:
    """The HNSW recall gate (hnsw_recall: 200 exact scans, a cost that grows with
    the table), measured again only when the index was rebuilt, the threshold changed, more than
    REMEASURE_RECALL_AFTER_SHARE of the vectors were written since the last measurement, or it is
    older than REMEASURE_RECALL_EVERY; otherwise that measurement's verdict, saying so."""
    from psycopg.types.json import Jsonb

    if not storage_for(db).ann_indexes:
        return hnsw_recall(db, version, threshold=threshold)
    state = _recall_state(db, version, threshold)
    key = {"version_id": version.version_id, "check": "hnsw_recall"}
    if state is not None:
        with db.connection() as conn:
            stored = conn.execute(statement("quality", "stored_measurement"),
                                  {**key, "max_age": REMEASURE_RECALL_EVERY}).fetchone()
        if stored is not None:
            measured, verdict, measured_at = _stored_recall_state(stored[0]), stored[1], stored[2]
            if measured is not None and measured.still_measures(state):
                written = state.touched - measured.touched
                return Verdict(verdict["passed"],
                               f"{verdict['summary']} (measured {measured_at:%Y-%m-%d %H:%M:%S %Z}; "
                               f"{written} vector rows written since, at most {REMEASURE_RECALL_AFTER_SHARE:.0%})",
                               {**verdict["diagnostics"], "reused_measurement": True, "rows_written_since": written},
                               verdict["metrics"])
    verdict = hnsw_recall(db, version, threshold=threshold)
    # Kept only if nothing was written while measuring.
    if state is not None and _recall_state(db, version, threshold) == state:
        with db.connection() as conn:
            conn.execute(statement("quality", "store_measurement"), {
                **key, "state": json.dumps(dataclasses.asdict(state)),
                "verdict": Jsonb({"passed": verdict.passed, "summary": verdict.summary,
                                  "diagnostics": verdict.diagnostics, "metrics": verdict.metrics})})
    return verdict
