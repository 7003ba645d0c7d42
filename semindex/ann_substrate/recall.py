"""The substrate's recall gate and its status: the zvec plan serves a version's generation only once
this check has passed for it (like the HNSW recall check, blocking).

Recall@k of the zvec plan end to end (candidates, delta, exact re-ranking) against pgvector's exact
plan, over stored vectors as queries, half unfiltered and half scoped to one source; counted by
distance, so tied chunks (repeated texts share a vector) are equally right.
"""

from __future__ import annotations

from dataclasses import replace

from psycopg.types.json import Jsonb

from semindex.ann_substrate.generations import generations, pending_changes, published
from semindex.database import Database
from semindex.quality import DEFAULT_HNSW_RECALL, Verdict, sample_percent
from semindex.relevance_metrics import distance_recall
from semindex.search.engine import NearestRequest, PlanKind, SemanticPlan
from semindex.search.engines import PGVECTOR, ZVEC
from semindex.search.planner import PlannerSettings
from semindex.search.request import Scope
from semindex.search.sources import sources_in_scope
from semindex.search.version_target import VersionTable
from semindex.sql_files import statement
from semindex.vectors.storage import storage_for
from semindex.vectors.version import EmbeddingVersion


def substrate_recall(db: Database, version: EmbeddingVersion, *, queries: int = 200, k: int = 10,
                     threshold: float | None = None) -> Verdict:
    threshold = version.thresholds.get("hnsw_recall", DEFAULT_HNSW_RECALL) if threshold is None else threshold
    if version.ann_engine != ZVEC.name:
        return Verdict(True, f"version {version.version_key!r} uses {version.ann_engine}: no zvec substrate to check",
                       {"engine": version.ann_engine})
    current = published(db, version)
    if current is None:
        return Verdict(False, f"version {version.version_key!r} has no published zvec generation: run "
                              f"`semindex substrate build {version.version_key}`", {})
    percent = sample_percent(db, version.vectors_table, queries)
    with db.connection() as conn:
        sample = [row[0] for row in conn.execute(statement("quality", "query_sample", vectors=version.vectors_table), (percent, queries))]
    sources = sorted(sources_in_scope(db, Scope(), version), key=lambda source: -(source.vector_estimate or 0))
    scoped = sources[:1]
    storage = storage_for(db)
    recalls = {"unfiltered": [], "scoped": []}
    for number, query in enumerate(sample):
        kind, plan_sources, name = ((PlanKind.GLOBAL, (), "unfiltered") if number % 2 == 0 or not scoped
                                    else (PlanKind.ANN, tuple(scoped), "scoped"))
        target = VersionTable(version, storage, Scope())
        # The candidate window search itself uses (the planner's), so the check measures the plan as it serves.
        request = NearestRequest(target, SemanticPlan(kind, ZVEC, plan_sources), query, k, window=PlannerSettings().window_for(kind))
        approximate = ZVEC.nearest(db, request, require_recall=False)
        exact = PGVECTOR.nearest(db, replace(request, plan=SemanticPlan(PlanKind.EXACT, PGVECTOR, plan_sources)))
        if exact:
            recalls[name].append(distance_recall([c.distance for c in approximate], [c.distance for c in exact], k))
    measured = {name: round(sum(values) / len(values), 4) for name, values in recalls.items() if values}
    if not measured:
        return Verdict(False, f"version {version.version_key!r} has no vectors to query", {"queries": 0})
    passed = all(value >= threshold for value in measured.values())
    diagnostics = {"generation": current.generation, "queries": {n: len(v) for n, v in recalls.items()}, "k": k,
                   "recall": measured, "threshold": threshold,
                   "scoped_source": scoped[0].name if scoped else None}
    with db.connection() as conn:
        conn.execute(statement("ann_substrate", "record_recall"), {
            "version_id": version.version_id, "generation": current.generation, "recall": Jsonb(diagnostics), "passed": passed})
    summary = ", ".join(f"{name} {value:.4f}" for name, value in measured.items())
    return Verdict(passed, f"zvec g{current.generation} recall@{k} {summary} {'>=' if passed else '<'} {threshold}", diagnostics)


def substrate_status(db: Database, version: EmbeddingVersion) -> dict:
    """What `semindex substrate status` and `versions list` show: engine, generation, horizon, lag."""
    if version.ann_engine != ZVEC.name:
        return {"engine": version.ann_engine, "state": "not applicable"}
    current = published(db, version)
    rows = generations(db, version)
    if current is None:
        return {"engine": "zvec", "state": "not built", "generations": len(rows)}
    lag = pending_changes(db, version, current.horizon, 1_000_000)
    row = next(r for r in rows if r.generation == current.generation)
    return {
        "engine": "zvec", "state": "serving" if current.recall_passed else "built, recall not passed",
        "generation": current.generation, "horizon": current.horizon, "documents": current.documents,
        "pending_changes": lag, "build_seconds": row.build_seconds, "disk_bytes": row.disk_bytes,
        "recall": row.recall.get("recall"), "published_at": current.published_at.isoformat(),
        "retired_generations": sum(1 for r in rows if r.state == "retired"),
    }
