"""The sources (connector instance, stream) a scope can see, from the retained-size projection."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg.rows import class_row

from semindex.database import Database
from semindex.search.engine import FieldScope, Source
from semindex.search.request import Scope
from semindex.sql_files import statement
from semindex.vectors.version import EmbeddingVersion


def sources_in_scope(db: Database, scope: Scope, version: EmbeddingVersion | None = None) -> list[Source]:
    """Every source the scope can see; with a version, its vector estimates and partial indexes."""
    with db.connection() as conn:
        return conn.cursor(row_factory=class_row(Source)).execute(
            statement("search", "sources_in_scope"),
            {
                "version_key": version.version_key if version else None,
                "version_id": version.version_id if version else None,
                "instances": list(scope.connector_instance_ids),
                "streams": list(scope.streams),
            },
        ).fetchall()


def connection_exists(db: Database, connector_instance_id: str) -> bool:
    with db.connection() as conn:
        return conn.execute(statement("search", "connection_exists"), {"instance": connector_instance_id}).fetchone()[0]


@dataclass(frozen=True)
class FieldStatistics:
    fields: list[str] | None
    shares: list[float] | None
    n_distinct: float
    partial_index: str | None

    def share_of(self, wanted: tuple[str, ...]) -> float:
        """The estimated share of rows in any of `wanted`: a common field's own share, and for
        another what the common ones leave, split evenly between the other distinct fields."""
        common = dict(zip(self.fields or [], self.shares or [], strict=True))
        others = (self.n_distinct if self.n_distinct > 0 else len(common) + 1) - len(common)
        rest = max(0.0, 1.0 - sum(common.values())) / max(1.0, others)
        return min(1.0, sum(common.get(name, rest) for name in set(wanted)))


def field_scope(db: Database, version: EmbeddingVersion, fields: tuple[str, ...], total: int) -> FieldScope | None:
    """About how many of the version's `total` rows are in `fields`, and the one field's partial
    graph if it has one; None before the version's table has statistics (the planner then plans per
    source, as without a field scope)."""
    schema, _, table = version.vectors_table.rpartition(".")
    distinct = set(fields)
    with db.connection() as conn:
        stats = conn.cursor(row_factory=class_row(FieldStatistics)).execute(
            statement("search", "field_statistics"),
            {"schema": schema or "public", "table": table, "version_id": version.version_id,
             "field": next(iter(distinct)) if len(distinct) == 1 else None}).fetchone()
    return None if stats is None else FieldScope(round(int(total) * stats.share_of(fields)), stats.partial_index)
