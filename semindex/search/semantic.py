"""Semantic search: the planner's plans run on their engines through the bounded fan-out, merged in
exact distance order, hydrated, and cut by the version's own similarity floor.

The promise: whenever at least k rows match, k hits come back, in exact distance order among
themselves (ties by record key, then chunk id; NaN last). A plan whose engine returns short (a
filtered graph walk under a selective scope) is answered again exactly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from semindex.database import Database
from semindex.encoders import load_encoder
from semindex.errors import NotFound
from semindex.search.engine import (
    Candidate,
    EngineSkipped,
    NearestRequest,
    PlanKind,
    SemanticEngine,
    SemanticPlan,
    best,
)
from semindex.search.engines import engines_for
from semindex.search.fanout import SearchFanOut
from semindex.search.hydration import chunk_details, hit_from
from semindex.search.planner import PlannerSettings, needs_sources, plan_semantic
from semindex.search.query_cache import QueryVectorCache
from semindex.search.request import MAX_K, Scope
from semindex.search.response import Hit
from semindex.search.sources import field_scope, sources_in_scope
from semindex.search.version_target import VersionTable
from semindex.vectors.storage import storage_for
from semindex.vectors.version import EmbeddingVersion, active_version, get_version

# The most rows a widened walk asks each plan for before the records are answered exactly.
MAX_CANDIDATES = 1000


def overscan(k: int) -> int:
    """Candidates to ask each plan for: enough to fill the page after merging, capped at the maximum."""
    return min(MAX_K, max(25, math.ceil(1.5 * k), k + 10))


def nearest_never_short(db: Database, request: NearestRequest, exact: SemanticEngine) -> tuple[list[Candidate], str]:
    """The plan's candidates; when a non-exact plan returns short (or its engine steps aside), its
    engine's fallback's, and then the exact engine's (only an exact scan can tell whether more rows
    match). Returns them with the label of every plan tried, and why an engine stepped aside."""
    plan = request.plan
    label = plan.label
    try:
        found = plan.engine.nearest(db, request)
    except EngineSkipped as skipped:
        found, label = [], f"{plan.label}({skipped.reason})"
    if plan.kind is PlanKind.EXACT or len(found) >= request.limit:
        return found, label
    fallback = getattr(plan.engine, "fallback", None)
    if fallback is not None and plan.kind in fallback.kinds:
        fallback_plan = SemanticPlan(plan.kind, fallback, plan.sources)
        found = fallback.nearest(db, replace(request, plan=fallback_plan))
        label = f"{label}->{fallback_plan.label}"
        if len(found) >= request.limit:
            return found, label
    exact_plan = SemanticPlan(PlanKind.EXACT, exact, plan.sources)
    return exact.nearest(db, replace(request, plan=exact_plan)), f"{label}->{exact_plan.label}"


@dataclass
class SemanticResult:
    hits: list[Hit]
    version: str
    plans: dict[str, str] = field(default_factory=dict)
    below_min_similarity: int | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


class SemanticSearch:
    def __init__(self, db: Database, settings: PlannerSettings, fanout: SearchFanOut, cache: QueryVectorCache) -> None:
        self.db = db
        self.settings = settings
        self.fanout = fanout
        self.cache = cache

    def resolve_version(self, version_key: str | None) -> EmbeddingVersion:
        current = active_version(self.db)
        self.cache.clear_if_active_version_changed(current.version_key if current else None)
        if version_key:
            return get_version(self.db, version_key)
        if current is None:
            raise NotFound("no embedding version is active yet: run `semindex run` first")
        return current

    def query_vector(self, version: EmbeddingVersion, text: str) -> np.ndarray:
        encoder = load_encoder(version.encoder_spec)
        return self.cache.get(version.version_key, text, lambda: encoder.encode([text])[0])

    def search(self, version: EmbeddingVersion, text: str, scope: Scope, k: int, *, chunks: bool = False,
               vector: np.ndarray | None = None, hydrate: bool = True) -> SemanticResult:
        """The k nearest of `text` (its vector from the cache, or `vector` when the caller has it)."""
        started = time.perf_counter()
        vector = self.query_vector(version, text) if vector is None else vector
        encoded = time.perf_counter()
        result = self.nearest_hits(version, vector, scope, k, chunks=chunks, hydrate=hydrate)
        result.timings_ms.update(encode=_ms(started, encoded), semantic=_ms(encoded, time.perf_counter()))
        return result

    def nearest_hits(self, version: EmbeddingVersion, vector: np.ndarray, scope: Scope, k: int, *,
                     chunks: bool = False, hydrate: bool = True) -> SemanticResult:
        """The k records (or with `chunks`, chunks) of the version nearest to `vector` within `scope`,
        as hits; k of them whenever k match. Without `hydrate`, the hits come without their chunk's
        place and snippet (a hybrid search needs them for its fused page only: `hydrate` them then)."""
        storage = storage_for(self.db)
        engines = engines_for(version.ann_engine, storage)
        listed = needs_sources(unscoped=scope.unrestricted, record_keys=bool(scope.record_keys),
                               names_sources=scope.names_sources)
        sources = sources_in_scope(self.db, scope, version) if listed else []
        in_fields = (field_scope(self.db, version, scope.fields, sources[0].version_total)
                     if scope.fields and sources and not scope.names_sources and storage.ann_indexes else None)
        plans = plan_semantic(sources, unscoped=scope.unrestricted, record_keys=bool(scope.record_keys),
                              names_sources=scope.names_sources, fields=in_fields,
                              engines=engines, settings=self.settings)
        target = VersionTable(version, storage, scope)
        per_record = not chunks

        def run(plans: list[SemanticPlan], limit: int) -> list[tuple[list[Candidate], str]]:
            return self.fanout.map(
                lambda plan: nearest_never_short(self.db, NearestRequest(
                    target, plan, vector, limit, self.settings.window_for(plan.kind), self.settings.max_ef_search,
                    per_record=per_record,
                ), engines.exact),
                plans,
            )

        def merged(answers) -> list[Candidate]:
            """Every plan's candidates in the total order (each record's first only, for records)."""
            rows = [candidate for candidates, _ in answers for candidate in candidates]
            return best(rows, len(rows), per_record=per_record)

        limit = overscan(k)
        while True:
            answers = run(plans, limit)
            ranked = merged(answers)
            # A graph walk answers in rows; several may be one record's. Widen it until the rows hold
            # k records, or every plan has returned all it has; past MAX_CANDIDATES, answer exactly.
            exhausted = all(len(candidates) < limit for candidates, _ in answers)
            if len(ranked) >= k or exhausted:
                break
            if limit >= MAX_CANDIDATES:
                plans = [SemanticPlan(PlanKind.EXACT, engines.exact, plan.sources) for plan in plans]
                answers = run(plans, overscan(k))
                ranked = merged(answers)
                break
            limit = min(MAX_CANDIDATES, limit * 4)
        labels: dict[str, str] = {}
        for plan, (_, label) in zip(plans, answers, strict=True):
            labels.update(dict.fromkeys(plan.names, label))
        # A few more than the page, so a chunk deleted between the two reads does not shorten it.
        hits = self._hits(version, ranked[: overscan(k)], hydrate=hydrate)
        result = SemanticResult(hits, version.version_key, labels)
        floor = version.thresholds.get("min_similarity")
        if floor is not None:
            # The version's own cutoff: similarity scales differ between encoders, so none is shared.
            kept = [hit for hit in hits if hit.scores["semantic"] >= floor]
            result.below_min_similarity = len(hits) - len(kept)
            hits = kept
        result.hits = hits[:k]
        return result

    def _hits(self, version: EmbeddingVersion, ranked: list[Candidate], *, hydrate: bool) -> list[Hit]:
        hits = []
        for candidate in ranked:
            distance = candidate.order[0]
            hits.append(Hit("", candidate.connector_instance_id, candidate.stream, candidate.record_key, candidate.field,
                            0, "", chunk_id=candidate.key, matched_fields=[candidate.field],
                            scores={"distance": distance, "semantic": version.metric.similarity(distance)}))
        if hydrate:
            hits = self.hydrate(hits)
        for rank, hit in enumerate(hits, start=1):  # after hydration: a chunk deleted since leaves no gap
            hit.ranks = {"semantic": rank}
        return hits

    def hydrate(self, hits: list[Hit]) -> list[Hit]:
        """The hits, those ranked without it now with their chunk's place and snippet, in order; one
        whose chunk was deleted since drops out (callers ask for a few more than they show). A hit
        without a chunk yet (a lexical record) passes as it is."""
        pending = [hit.chunk_id for hit in hits if hit.chunk_id and not hit.hydrated]
        details = chunk_details(self.db, pending)
        hydrated = []
        for hit in hits:
            if hit.chunk_id and not hit.hydrated:
                detail = details.get(hit.chunk_id)
                if detail is None:
                    continue
                placed = hit_from(detail)
                hit.connector_id, hit.chunk_no, hit.snippet, hit.updated_at = (
                    placed.connector_id, placed.chunk_no, placed.snippet, placed.updated_at)
            hydrated.append(hit)
        return hydrated


def _ms(start: float, end: float) -> float:
    return round(1000 * (end - start), 2)
