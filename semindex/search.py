"""Semantic search over the active embedding version (the full planner is its own stage of work)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from semindex.database import Database
from semindex.embeddings import EmbeddingVersion, active_version, get_version
from semindex.encoders import load_encoder
from semindex.evaluation import distance_operator
from semindex.sql_files import statement

MAX_K = 100


@dataclass(frozen=True)
class Hit:
    connector_id: str
    connector_instance_id: str
    stream: str
    record_key: str
    field: str
    chunk_no: int
    snippet: str
    distance: float
    score: float

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_version(db: Database, version_key: str | None) -> EmbeddingVersion:
    if version_key:
        return get_version(db, version_key)
    version = active_version(db)
    if version is None:
        raise LookupError("no embedding version is active yet: run `semindex run` first")
    return version


def semantic_search(db: Database, query: str, *, k: int = 10, version_key: str | None = None) -> list[Hit]:
    if not query.strip():
        raise ValueError("the query is empty")
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k={k} must be between 1 and {MAX_K}")
    version = resolve_version(db, version_key)
    query_vector = load_encoder(version.encoder_name).encode([query])[0]
    sql_text = statement("search", "semantic_top_k", vectors=version.vectors_table, operator=distance_operator(version))
    with db.connection() as conn:
        conn.execute(statement("search", "ann_settings"), (str(max(100, 2 * k)),))
        rows = conn.execute(sql_text, {"query": query_vector, "k": k}).fetchall()
    hits = []
    for connector_id, instance, stream, record_key, field, chunk_no, content, distance in rows:
        distance = float(distance) if distance is not None and not math.isnan(distance) else math.inf
        hits.append(
            Hit(connector_id, instance, stream, record_key, field, chunk_no, _snippet(content), distance, 1.0 - distance)
        )
    return hits


def _snippet(content: str, length: int = 200) -> str:
    return content if len(content) <= length else content[: length - 1].rstrip() + "…"
