"""Row counts the writes keep, so a pipeline run never counts a table.

Statement-level triggers (sql/schema.sql: count_relation and the count_*_rows functions) append, in
the writing transaction, what each statement changed per (relation, connector instance, stream): rows
(live records for raw_records) and bytes (record fields as text, chunk content). Appends never wait
on one another, unlike updates of one shared counter row, so parallel writers stay parallel. A read
folds the appended deltas into semindex.source_rows and sums the relation's sources: its cost is the
number of sources, not of rows, and the figure is exact as of the reading statement (the deltas
commit with the rows they describe).

raw_records, chunks and lexical_documents are counted from the bootstrap on; a version's vector table
from the first read of its count (vector_rows). Either way the relation is counted in full once, when
its triggers are attached, under a lock that keeps writers out meanwhile. A relation whose triggers
are gone (the table dropped and made again) is counted afresh.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg.rows import class_row

from semindex.database import Database
from semindex.errors import InvalidInput
from semindex.sql_files import statement
from semindex.vectors.version import EmbeddingVersion

RAW_RECORDS = "semindex.raw_records"  # live records: tombstones are not counted
CHUNKS = "semindex.chunks"
LEXICAL_DOCUMENTS = "semindex.lexical_documents"
# The shape of each fixed relation's counting triggers (a vector table is "vectors").
SHAPES = {RAW_RECORDS: "records", CHUNKS: "chunks", LEXICAL_DOCUMENTS: "plain"}


@dataclass(frozen=True)
class SourceTotal:
    relation: str
    connector_instance_id: str
    stream: str
    rows: int
    bytes: int


def count_relation(db: Database, table: str, shape: str, version_id: int | None = None) -> bool:
    """Attach the counting triggers to `table` and count it once, unless that is done; True when it
    counted now."""
    with db.connection() as conn:
        return conn.execute(statement("row_counts", "count_relation"),
                            {"table": table, "shape": shape, "version_id": version_id}).fetchone()[0]


def fold(conn) -> None:
    conn.execute(statement("row_counts", "fold"))


@dataclass(frozen=True)
class RelationCount:
    counted: bool
    rows: int  # now (raw_records: live records)
    touched: int  # rows ever written since counting began: unchanged means nothing was written


def relation_count(db: Database, relation: str) -> RelationCount:
    """The relation's kept count, folded first."""
    with db.connection() as conn:
        fold(conn)
        found = conn.cursor(row_factory=class_row(RelationCount)).execute(
            statement("row_counts", "rows"), {"relation": relation}).fetchone()
    if not found.counted:
        if relation not in SHAPES:
            raise InvalidInput(f"{relation!r} is not a counted relation; a vector table is counted through vector_rows")
        count_relation(db, relation, SHAPES[relation])
        return relation_count(db, relation)
    return found


def relation_rows(db: Database, relation: str) -> int:
    """The relation's rows now (raw_records: live records), from the kept counts."""
    return relation_count(db, relation).rows


def vector_count(db: Database, version: EmbeddingVersion) -> RelationCount:
    """The kept count of the version's vector table (counted from this call on, in full the first time)."""
    count_relation(db, version.vectors_table, "vectors", version.version_id)
    return relation_count(db, version.vectors_table)


def vector_rows(db: Database, version: EmbeddingVersion) -> int:
    return vector_count(db, version).rows


def source_totals(conn, relations: list[str], sources: list[tuple[str, str]]) -> list[SourceTotal]:
    """Rows and bytes per (relation, source) for the given sources, in the caller's transaction."""
    return conn.cursor(row_factory=class_row(SourceTotal)).execute(
        statement("row_counts", "source_totals"),
        {"relations": relations, "instances": [s[0] for s in sources], "streams": [s[1] for s in sources]},
    ).fetchall()
