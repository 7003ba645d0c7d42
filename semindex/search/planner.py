"""The semantic planner: which plan answers each source of the scope, and with which engine.

Per source (connector_instance_id, stream), from the retained-size projection's estimates:

  exact    small or unknown sources (<= exact_threshold vectors), record keys given, or a source too
           small a share of the version for a filtered graph walk to stay accurate: an exact scan
  partial  a source with a hot partial HNSW index (semindex.partial_indexes): that index
  ann      otherwise the version's graph, the scope applied as a filter; every source planned ann
           shares one walk, and a hot source joins it when there is one
  global   no scope at all: one walk of the version's graph

A plan runs on the version's ANN engine when that engine executes its kind and serves the
database's storage, and on the storage's exact engine otherwise (JSONB mode: everything exact).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from semindex.errors import InvalidInput
from semindex.search.engine import (
    FieldScope,
    PlanKind,
    SemanticEngine,
    SemanticPlan,
    Source,
)


@dataclass(frozen=True)
class PlannerSettings:
    # Candidate windows (hnsw.ef_search) by the graph walked, from bench/search_latency.py's data at
    # 1M real rows. A hot source's partial graph holds its recall at 200 (0.990 at 10%, p50 12.5 ms
    # against 19.1 ms at 400). The version's graph, 40 queries interleaved at 200/300/400 in one run:
    # unscoped p50 12.7/15.6/18.2 ms at recall 0.985/0.990/0.998, the 50% scope 13.0/15.8/18.8 ms at
    # 0.985/0.988/0.998. (400 had bought a 43% field scope's filtered walk 0.895 -> 0.938; such a
    # field now walks a graph of its own, at 0.978.) Either may be raised where recall matters more.
    candidate_window: int = 200
    graph_window: int = 200
    # At most this many vectors, a source is scanned exactly. At 1M real rows a source of 9,990 took
    # 30.9 ms p50 exactly (a page read per few rows, then a sort by record); its partial graph (the
    # hot-source band starts at the same size) answers in a walk.
    exact_threshold: int = 5_000
    # Below this share of the version, a filtered walk of the version's graph loses recall (0.79 at
    # 2% measured with iterative scans); such sources go exact unless they have a partial index.
    min_ann_share: float = 0.05
    max_ef_search: int = 1000

    def __post_init__(self) -> None:
        if min(self.candidate_window, self.graph_window, self.max_ef_search) < 1 or self.exact_threshold < 0:
            raise InvalidInput(f"planner settings must be positive: {self}")
        if not 0 <= self.min_ann_share <= 1:
            raise InvalidInput(f"min_ann_share={self.min_ann_share} must be between 0 and 1")

    def window_for(self, kind: PlanKind) -> int:
        """The candidate window of a plan's walk: the version's graph, or a source's partial one."""
        return self.graph_window if kind in (PlanKind.GLOBAL, PlanKind.ANN) else self.candidate_window


@dataclass(frozen=True)
class EngineChoice:
    exact: SemanticEngine  # the storage's exact engine: always there
    ann: SemanticEngine | None  # the version's ANN engine, when it serves this storage

    def for_kind(self, kind: PlanKind) -> SemanticEngine | None:
        if self.ann is not None and kind in self.ann.kinds:
            return self.ann
        return self.exact if kind in self.exact.kinds else None


def choose_kind(
    estimate: int | None, total: int, *, record_keys: bool, partial_index: bool, settings: PlannerSettings
) -> PlanKind:
    """The plan kind for one scoped source (the rule the adopted blob table's search shares)."""
    if record_keys or estimate is None or estimate <= settings.exact_threshold:
        return PlanKind.EXACT
    if partial_index:
        return PlanKind.PARTIAL
    if total and estimate / total < settings.min_ann_share:
        return PlanKind.EXACT
    return PlanKind.ANN


def needs_sources(*, unscoped: bool, record_keys: bool, names_sources: bool) -> bool:
    """Whether plan_semantic plans by the scope's sources (so the caller must list them): not for the
    whole version, nor for record keys without named sources."""
    return not unscoped and (names_sources or not record_keys)


def plan_semantic(
    sources: Sequence[Source], *, unscoped: bool, record_keys: bool, engines: EngineChoice, settings: PlannerSettings,
    names_sources: bool = True, fields: FieldScope | None = None,
) -> list[SemanticPlan]:
    """One plan per exact or partial source, one shared plan for the ANN sources, or one global plan.

    A scope that names no source is planned as a whole, in one statement, not per source:
      record keys  one exact plan: the keys pick their rows through the record-key index, so it
                   costs what the keys match, where a plan per source would pay a round trip for
                   every source the version has (and the sources need not be listed: needs_sources);
      fields       one field with a hot partial graph: one walk of that graph (a partial plan of
                   no sources). Otherwise by the fields' estimated rows (from the table's
                   statistics): a small share (under min_ann_share, or at most exact_threshold rows)
                   is one exact plan through the field index; a larger one is one walk of the
                   version's graph with the fields as its filter, as selective as the fields are
                   overall. Planned per source, a source without the field would be walked in vain
                   and a small one scanned whole.
    """
    if unscoped:
        return [_plan(PlanKind.GLOBAL, (), engines)]
    if not needs_sources(unscoped=unscoped, record_keys=record_keys, names_sources=names_sources):
        return [SemanticPlan(PlanKind.EXACT, engines.exact, ())]
    if not names_sources and fields is not None and sources:
        if fields.partial_index is not None:
            return [_plan(PlanKind.PARTIAL, (), engines)]
        total = sources[0].version_total
        if fields.rows <= settings.exact_threshold or not total or fields.rows / total < settings.min_ann_share:
            return [SemanticPlan(PlanKind.EXACT, engines.exact, ())]
        return [_plan(PlanKind.ANN, tuple(sources), engines)]
    plans, group = [], []
    for source in sources:
        kind = choose_kind(source.vector_estimate, source.version_total, record_keys=record_keys,
                           partial_index=source.partial_index is not None, settings=settings)
        plan = _plan(kind, (source,), engines)
        if plan.kind is PlanKind.ANN:
            group.append(source)
        else:
            plans.append(plan)
    if group:
        # A hot source joins the scope's walk of the version's graph when there is one: that walk
        # passes its rows at the group's combined selectivity, so a walk of its own graph would only
        # double the work (the 50% scope at 1M rows, three sources, 30 queries in one run: p50 16.3
        # ms and recall 0.993 in two walks, 14.7 ms and 0.997 in one).
        group += [source for plan in plans if plan.kind is PlanKind.PARTIAL for source in plan.sources]
        plans = [plan for plan in plans if plan.kind is not PlanKind.PARTIAL]
        plans.append(_plan(PlanKind.ANN, tuple(group), engines))
    return plans


def _plan(kind: PlanKind, sources: tuple[Source, ...], engines: EngineChoice) -> SemanticPlan:
    engine = engines.for_kind(kind)
    if engine is None:  # no engine walks graphs here (JSONB mode): rank every row exactly
        return SemanticPlan(PlanKind.EXACT, engines.exact, sources)
    return SemanticPlan(kind, engine, sources)
