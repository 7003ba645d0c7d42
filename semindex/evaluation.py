"""Evaluation gates: HNSW recall@k against exact search on sampled queries."""

from __future__ import annotations

from psycopg import sql

from semindex.database import Database
from semindex.embeddings import EmbeddingVersion
from semindex.quality import Verdict, sample_percent
from semindex.sql_files import statement

OPERATOR_BY_METRIC = {"cosine": "<=>", "l2": "<->", "ip": "<#>"}


def distance_operator(version: EmbeddingVersion) -> sql.SQL:
    return sql.SQL(OPERATOR_BY_METRIC[version.distance_metric])


def hnsw_recall(
    db: Database,
    version: EmbeddingVersion,
    *,
    queries: int = 200,
    k: int = 10,
    ef_search: int = 100,
    threshold: float = 0.95,
) -> Verdict:
    """Mean recall@k of the version's HNSW index against an exact scan, over stored vectors as queries."""
    percent = sample_percent(db, version.vectors_table, queries)
    top_k = statement("quality", "ann_top_k", vectors=version.vectors_table, operator=distance_operator(version))
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
            # Counted by distance, not id: repeated texts share a vector, and any of the tied
            # chunks is an equally correct answer.
            kth = exact[-1] + 1e-6
            recalls.append(sum(1 for distance in approximate if distance <= kth) / len(exact))
    if not recalls:
        return Verdict(False, f"version {version.version_key!r} has no vectors to query", {"queries": 0})
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
    return Verdict(passed, f"recall@{k} {recall:.4f} {'>=' if passed else '<'} {threshold} over {len(recalls)} queries", diagnostics)
