"""Data-quality gates: pandera schemas over sampled chunk and embedding frames, vector/chunk parity
and index validity. Each returns a verdict with diagnostics for the asset check's metadata.

pandas and pandera are imported when a check runs, not when Dagster loads the definitions (they
cost about half a second).

In JSONB mode (no pgvector) vectors are JSON arrays, checked by the same schema once parsed, and
there are no HNSW indexes to validate.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from semindex.database import Database
from semindex.indexes import index_validity, is_ann_index_name
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


def sample_percent(db: Database, table: str, wanted: int) -> float:
    with db.connection() as conn:
        estimate = conn.execute(statement("quality", "row_estimate"), (table,)).fetchone()
    rows = estimate[0] if estimate else 0
    return 100.0 if rows <= wanted else min(100.0, 300.0 * wanted / rows)


def _failure_cases(error) -> list[dict]:
    cases = error.failure_cases.head(10)
    return [{k: str(v) for k, v in row.items()} for row in cases.to_dict(orient="records")]


def check_chunk_frame(db: Database, sample_size: int = 2000) -> Verdict:
    import pandas as pd
    import pandera.pandas as pa

    schema = chunk_schema()
    percent = sample_percent(db, "semindex.chunks", sample_size)
    with db.connection() as conn:
        rows = conn.execute(statement("quality", "chunk_sample"), (percent, sample_size)).fetchall()
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
    import pandas as pd
    import pandera.pandas as pa

    percent = sample_percent(db, version.vectors_table, sample_size)
    with db.connection() as conn:
        rows = conn.execute(
            statement("quality", "vector_sample", vectors=version.vectors_table), (percent, sample_size)
        ).fetchall()
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


def check_parity(db: Database, version: EmbeddingVersion) -> Verdict:
    with db.connection() as conn:
        watermark = conn.execute(statement("vectors", "watermark"), (version.version_id,)).fetchone()
        pending = conn.execute(statement("vectors", "pending_count"), (watermark[0] if watermark else 0,)).fetchone()[0]
        missing, orphaned, chunks, vectors = conn.execute(
            statement("quality", "parity", vectors=version.vectors_table)
        ).fetchone()
    diagnostics = {"chunks": chunks, "vectors": vectors, "missing": missing, "orphaned": orphaned, "backfill_pending": pending}
    # The backfill's lag: live chunks this version has no vector for yet.
    metrics = {**diagnostics, "lag_chunks": max(pending, missing)}
    if pending:
        return Verdict(False, f"backfill of {version.version_key!r} is not done: {pending} chunks pending", diagnostics, metrics)
    if missing or orphaned:
        return Verdict(False, f"{missing} chunks without a vector, {orphaned} vectors without a chunk", diagnostics, metrics)
    return Verdict(True, f"every one of {chunks} chunks has exactly one vector", diagnostics, metrics)


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
