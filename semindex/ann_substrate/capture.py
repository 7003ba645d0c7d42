"""Change capture on a version's vector table: statement-level triggers append the chunk ids every
statement touched to `semindex.vector_changes` (sql/schema.sql, sql/ann_substrate.sql).

Created with the table for versions whose ANN engine needs them (the zvec engine does), in the
same transaction; `ensure_change_capture` is the migration for tables made before, and says what it
did. Cascaded deletes from the chunks table fire the delete trigger too.
"""

from __future__ import annotations

import psycopg

from semindex.database import Database
from semindex.sql_files import statement
from semindex.vectors.version import EmbeddingVersion

EVENTS = ("insert", "update", "delete")


def trigger_names(version: EmbeddingVersion) -> dict[str, str]:
    return {f"{event}_trigger": f"{version.table_name}_capture_{event}" for event in EVENTS}


def create_change_capture(conn: psycopg.Connection, version: EmbeddingVersion) -> None:
    """The triggers, on `conn`'s transaction (the one that creates the table)."""
    conn.execute(statement("ann_substrate", "create_capture", vectors=version.vectors_table,
                           version_id=version.version_id, **trigger_names(version)))


def ensure_change_capture(db: Database, version: EmbeddingVersion) -> str:
    """The migration for a table made without capture: creates the triggers when any is missing.
    Returns what it did, for the caller's log or metadata."""
    names = list(trigger_names(version).values())
    with db.connection() as conn:
        present = conn.execute(statement("ann_substrate", "capture_triggers"),
                               {"vectors": version.vectors_table, "names": names}).fetchone()[0]
        if present == len(names):
            return "change capture present"
        create_change_capture(conn, version)
    return (f"change capture added to {version.vectors_table} ({present} of {len(names)} triggers were there); "
            "rows written before it are in the next full build")
