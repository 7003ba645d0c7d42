"""An embedding version's vector table as a VectorTarget, bound to one request's scope.

Its statements live in sql/search.sql; the version's metric fills in the distance operator.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from semindex.search.engine import PlanKind, ScannedRow, SemanticPlan
from semindex.search.request import Scope
from semindex.sql_files import statement
from semindex.vectors.storage import VectorStorage
from semindex.vectors.version import EmbeddingVersion


class VersionTable:
    def __init__(self, version: EmbeddingVersion, storage: VectorStorage, scope: Scope) -> None:
        self.version = version
        self.storage = storage
        self.scope = scope
        self.name = version.vectors_table
        self.metric = version.metric
        self.dimensions = version.dimensions

    def _scoped(self) -> dict:
        return self.scope.sql_params()

    def _statement(self, name: str):
        return statement("search", name, vectors=self.version.vectors_table, operator=self.metric.sql_operator)

    def nearest_statements(self, plan: SemanticPlan, per_record: bool = False):
        scoped = self._scoped()
        if plan.kind is PlanKind.GLOBAL:
            return [(self._statement("semantic_global_ann"), {})]
        if plan.kind is PlanKind.ANN:
            return [(self._statement("semantic_ann_group"), {
                **scoped,
                "instances": sorted({source.connector_instance_id for source in plan.sources}),
                "streams": sorted({source.stream for source in plan.sources}),
            })]
        if plan.kind is PlanKind.PARTIAL and not plan.sources:  # the scope's one hot field's graph
            (field,) = set(self.scope.fields)
            return [(self._statement("semantic_ann_field"), {**scoped, "field": field})]
        records = "_records" if per_record else ""
        name = "semantic_ann" if plan.kind is PlanKind.PARTIAL else f"semantic_exact{records}"
        if not plan.sources:
            return [(self._statement(f"semantic_exact_all{records}"), scoped)]
        return [
            (self._statement(name), {**scoped, "instance": source.connector_instance_id, "stream": source.stream})
            for source in plan.sources
        ]

    def scan_statements(self, plan: SemanticPlan):
        if not plan.sources:
            return [(self._statement("scan_all"), self._scoped())]
        return [
            (self._statement("scan_source"), {**self._scoped(), "instance": source.connector_instance_id, "stream": source.stream})
            for source in plan.sources
        ]

    def parse(self, rows: Sequence[ScannedRow]) -> tuple[list[ScannedRow], np.ndarray]:
        return list(rows), self.storage.parse([row.embedding for row in rows], self.dimensions, self.name)
