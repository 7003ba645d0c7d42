"""Dagster resources: thin handles onto the semindex library."""

from __future__ import annotations

from typing import Optional

import dagster as dg

from semindex.database import Database, open_database


class PostgresResource(dg.ConfigurableResource):
    """The semindex database. With `database_url` unset, DATABASE_URL is used when set, otherwise
    the embedded PostgreSQL under SEMINDEX_HOME is started or reused."""

    database_url: Optional[str] = None

    def database(self) -> Database:
        return open_database(self.database_url)
