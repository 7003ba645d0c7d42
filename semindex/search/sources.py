"""The sources (connector instance, stream) a scope can see, from the retained-size projection."""

from __future__ import annotations

from psycopg.rows import class_row

from semindex.database import Database
from semindex.search.engine import Source
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
