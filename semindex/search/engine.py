"""The semantic engine seam: "the nearest candidates for this plan, scope and limit".

An engine executes plans (see semindex.search.planner) against a VectorTarget: a table of vectors
bound to one request's scope, which knows its own statements (a version's table, or an adopted
semantic_search_blob table). Engines never decide what to run; the planner does, and the caller
makes the promise that k rows come back whenever k rows match (an engine may return short from an
ANN plan; semindex.search.semantic then answers exactly).

To add an engine: implement SemanticEngine (a name, the plan kinds it executes, whether it can serve
a storage, `nearest`) and register it in semindex.search.engines; a version then names it as its
`ann_engine`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import numpy as np
from psycopg import sql

from semindex.database import Database
from semindex.vectors.metric import Metric
from semindex.vectors.storage import VectorStorage


class EngineSkipped(Exception):
    """An engine declines a plan (no index built yet, too many changes since it was built...); the
    caller answers with the engine's fallback or exactly, and reports the reason in the plan label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PlanKind(StrEnum):
    EXACT = "exact"  # exact distance order over the scoped rows
    ANN = "ann"  # a walk of the target's graph with the scope as a filter (one source or a group)
    PARTIAL = "partial"  # a walk of the source's own partial graph (no sources: the scope's one field's)
    GLOBAL = "global_ann"  # no scope at all: one unfiltered walk


@dataclass(frozen=True)
class Source:
    connector_instance_id: str
    stream: str
    vector_estimate: int | None  # the projection's last count for the version; None = never counted
    partial_index: str | None  # the source's hot partial HNSW index, if it has one
    version_total: int  # the version's vectors over every source

    @property
    def name(self) -> str:
        return f"{self.connector_instance_id}/{self.stream}"


@dataclass(frozen=True)
class FieldScope:
    """A scope given by fields alone, as the planner sees it: about how many of the version's rows
    are in the fields (from the table's statistics), and the hot field's partial HNSW index when the
    scope is one field that has one."""

    rows: int
    partial_index: str | None


@dataclass(frozen=True)
class SemanticPlan:
    kind: PlanKind
    engine: SemanticEngine
    sources: tuple[Source, ...]  # () = the whole target (no scope)

    @property
    def label(self) -> str:
        return self.engine.label(self.kind)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(source.name for source in self.sources) or ("*",)


@dataclass(frozen=True)
class Candidate:
    """One nearest row: its key within the target (a chunk id, or an adopted row's scope key), its
    record, its field, and the metric's distance (NaN and NULL read as +inf: they sort last)."""

    key: int | str
    record_key: str
    field: str
    distance: float
    connector_instance_id: str = ""  # with stream and record_key, the record (targets that have them)
    stream: str = ""

    @property
    def record(self) -> tuple[str, str, str]:
        return (self.connector_instance_id, self.stream, self.record_key)

    @property
    def order(self) -> tuple[float, str, int | str]:
        """The total order every path ranks by: distance, then record key, then key."""
        distance = self.distance
        return (math.inf if distance is None or math.isnan(distance) else float(distance), self.record_key, self.key)


@dataclass(frozen=True)
class ScannedRow:
    """A scoped row as scan statements give it: the embedding as text ("[0.1,-0.2,...]")."""

    key: int | str
    record_key: str
    field: str
    embedding: str
    connector_instance_id: str = ""
    stream: str = ""

    def candidate(self, distance: float) -> Candidate:
        return Candidate(self.key, self.record_key, self.field, distance, self.connector_instance_id, self.stream)


class VectorTarget(Protocol):
    """A table of vectors, bound to one request's scope (its fields, record keys, ...)."""

    name: str  # for messages and logs
    metric: Metric
    dimensions: int

    def nearest_statements(self, plan: SemanticPlan, per_record: bool = False) -> Sequence[tuple[sql.Composable, dict]]:
        """Statements (with their bind parameters, less `query` and `limit`) whose rows, taken
        together, are the plan's candidates in the shape of Candidate, each ordered by distance
        and limited by %(limit)s; with `per_record`, an exact plan's rows are each record's nearest."""
        ...

    def scan_statements(self, plan: SemanticPlan) -> Sequence[tuple[sql.Composable, dict]]:
        """Statements yielding every row the plan covers as ScannedRow, unordered and unlimited."""
        ...

    def parse(self, rows: Sequence[ScannedRow]) -> tuple[list[ScannedRow], np.ndarray]:
        """The rows that hold a usable vector of `dimensions`, and their vectors as a float64 matrix."""
        ...


@dataclass(frozen=True)
class NearestRequest:
    target: VectorTarget
    plan: SemanticPlan
    query: np.ndarray
    limit: int
    window: int = 200  # the graph walk's candidate window (hnsw.ef_search), at least `limit`
    max_window: int = 1000  # the widest window a short walk may retry with
    # Exact plans return each record's nearest row only, `limit` records (never-short at record
    # level); ANN plans return rows, and the caller widens them until they hold enough records.
    per_record: bool = False


class SemanticEngine(Protocol):
    name: str
    kinds: frozenset[PlanKind]  # the plan kinds it executes

    def serves(self, storage: VectorStorage) -> bool:
        """Whether it can search vectors kept in this storage."""
        ...

    def label(self, kind: PlanKind) -> str:
        """How a plan of this kind is reported in ResponseMeta.semantic_plans."""
        ...

    def nearest(self, db: Database, request: NearestRequest) -> list[Candidate]:
        """Up to request.limit candidates in Candidate.order; may be short for non-exact plans, or
        raise EngineSkipped. An engine may also have a `fallback` engine (tried before the exact
        answer), `captures_changes` (its version tables need change capture) and `require()` (raises
        Unavailable when something it needs is not installed)."""
        ...


def best(candidates: list[Candidate], limit: int, *, per_record: bool = False) -> list[Candidate]:
    """The first `limit` candidates in the total order, each row once; with `per_record`, each
    record's first only. (Two graph elements of one text, written by racing transactions, expand to
    the same rows.)"""
    ordered = sorted(candidates, key=lambda candidate: candidate.order)
    rows: set = set()  # a row is its record and its key (an adopted row's key is unique only within its record)
    ordered = [c for c in ordered if not ((c.record, c.key) in rows or rows.add((c.record, c.key)))]
    if per_record:
        seen: set[tuple[str, str, str]] = set()
        ordered = [c for c in ordered if not (c.record in seen or seen.add(c.record))]
    return ordered[:limit]
