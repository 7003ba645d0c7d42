"""The adopted table as the catalog describes it: every migration step is read from here.

The reference server's semantic table: (connector_id, connector_instance_id, scope_key, record_key,
<embedding>), primary key (connector_instance_id, scope_key, record_key), scope_key the JSON text
`["<stream>","<field>"]`. The embedding column (found by type, whatever its name) starts as JSONB and
becomes an untyped `vector`, so rows of several dimensions share the table; a partial expression
HNSW index serves one dimension.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from semindex.database import Database
from semindex.errors import Conflict, InvalidInput
from semindex.sql_files import statement

DEFAULT_TABLE = "public.semantic_search_blob"
STAGING_COLUMN = "embedding_vec"
KEY_COLUMNS = ("connector_instance_id", "scope_key", "record_key")
MAX_VECTOR_DIMENSIONS = 16_000
MAX_HNSW_DIMENSIONS = 2_000  # pgvector's HNSW limit for the vector type
# What a migration run can find (BlobState.phase), in the order the steps run.
PHASES = ("jsonb", "staging", "swapped", "migrated")


def split_table_name(table: str) -> tuple[str, str]:
    """("schema", "table") from "schema.table" or "table" (schema public)."""
    parts = table.split(".")
    if len(parts) == 1:
        parts = ["public", *parts]
    if len(parts) != 2 or not all(0 < len(part) <= 63 for part in parts):
        raise InvalidInput(f"table {table!r} must be 'schema.table' or 'table', each name 1 to 63 characters")
    return parts[0], parts[1]


def default_index_name(table_name: str, column: str, dimensions: int) -> str:
    name = f"{table_name}_{column}_{dimensions}_hnsw"
    if len(name) > 63:  # PostgreSQL would truncate it silently, and then never find it again
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[: 63 - 9]}_{digest}"
    return name


def check_index_dimensions(dimensions: int) -> int:
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions <= MAX_HNSW_DIMENSIONS:
        raise InvalidInput(f"dimensions={dimensions!r} must be between 1 and {MAX_HNSW_DIMENSIONS} (pgvector's HNSW limit)")
    return dimensions


@dataclass(frozen=True)
class BlobState:
    """What the catalog says about the table; every migration step is read from here."""

    schema: str
    name: str
    column: str  # the embedding column: JSONB before the swap, vector after
    column_type: str  # "jsonb" or "vector"
    staging: bool  # embedding_vec exists (backfill started, swap not done)
    not_null: bool
    index_name: str
    index_valid: bool | None  # None: no such index; False: left invalid by an interrupted build
    row_estimate: int

    @property
    def table(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def phase(self) -> str:
        if self.column_type == "jsonb":
            return "staging" if self.staging else "jsonb"
        if self.not_null and self.index_valid:
            return "migrated"
        return "swapped"


class BlobTableError(Conflict):
    """The table is not the reference server's semantic table, or is in a state no step explains."""


def inspect_blob_table(
    db: Database, *, table: str = DEFAULT_TABLE, dimensions: int = 384, column: str | None = None,
    index_name: str | None = None,
) -> BlobState:
    with db.connection() as conn:
        return inspect(conn, table, dimensions, column, index_name)


def blob_table_exists(db: Database, table: str = DEFAULT_TABLE) -> bool:
    """Whether the database holds a table to adopt (the vector-column stage migrates it when it does)."""
    schema, name = split_table_name(table)
    with db.connection() as conn:
        return conn.execute(statement("semantic_blob", "relation"), (schema, name)).fetchone() is not None


def inspect(conn, table: str, dimensions: int, column: str | None, index_name: str | None) -> BlobState:
    schema, name = split_table_name(table)
    relation = conn.execute(statement("semantic_blob", "relation"), (schema, name)).fetchone()
    if relation is None:
        raise BlobTableError(f"table {schema}.{name} does not exist")
    oid, row_estimate = relation
    columns = conn.execute(statement("semantic_blob", "columns"), (oid,)).fetchall()
    types = {col_name: type_name for col_name, type_name, _, _ in columns}
    formatted = {col_name: formatted_type for col_name, _, formatted_type, _ in columns}
    not_null = {col_name: flag for col_name, _, _, flag in columns}
    primary_key = conn.execute(statement("semantic_blob", "primary_key"), (oid,)).fetchone()[0]
    if tuple(primary_key or ()) != KEY_COLUMNS:
        raise BlobTableError(
            f"{schema}.{name} has primary key {tuple(primary_key or ())}, not {KEY_COLUMNS}: "
            "it is not the reference server's semantic table"
        )
    staging = STAGING_COLUMN in types
    if staging and types[STAGING_COLUMN] != "vector":
        raise BlobTableError(f"{schema}.{name}.{STAGING_COLUMN} is {formatted[STAGING_COLUMN]}, not vector")
    if staging and formatted[STAGING_COLUMN] != "vector":
        raise BlobTableError(
            f"{schema}.{name}.{STAGING_COLUMN} is {formatted[STAGING_COLUMN]}: it must be untyped vector so rows "
            "of several dimensions fit; drop that column and run again"
        )
    jsonb_columns = [c for c, t in types.items() if t == "jsonb"]
    vector_columns = [c for c, t in types.items() if t == "vector" and c != STAGING_COLUMN]
    if column is not None:
        if column not in types:
            raise BlobTableError(f"{schema}.{name} has no column {column!r} (it has {', '.join(types)})")
        if types[column] not in ("jsonb", "vector") or (staging and types[column] != "jsonb"):
            raise BlobTableError(f"{schema}.{name}.{column} is {formatted[column]}, not jsonb or vector")
        embedding = column
    elif staging:
        if len(jsonb_columns) != 1:
            raise BlobTableError(
                f"{schema}.{name} has {STAGING_COLUMN} but {len(jsonb_columns)} jsonb columns "
                f"({', '.join(jsonb_columns) or 'none'}); pass column= to say which is the embedding"
            )
        embedding = jsonb_columns[0]
    elif vector_columns:
        if len(vector_columns) > 1:
            raise BlobTableError(
                f"{schema}.{name} has several vector columns ({', '.join(vector_columns)}); pass column="
            )
        embedding = vector_columns[0]
    elif len(jsonb_columns) == 1:
        embedding = jsonb_columns[0]
    elif not jsonb_columns:
        raise BlobTableError(
            f"{schema}.{name} has no jsonb (or vector) embedding column; its columns are "
            + ", ".join(f"{c} {formatted[c]}" for c in types)
        )
    else:
        raise BlobTableError(
            f"{schema}.{name} has several jsonb columns ({', '.join(jsonb_columns)}): pass column= to say "
            "which holds the embedding"
        )
    index_name = index_name or default_index_name(name, embedding, dimensions)
    validity = conn.execute(statement("semantic_blob", "index_validity"), (schema, index_name)).fetchone()
    return BlobState(
        schema=schema,
        name=name,
        column=embedding,
        column_type=types[embedding],
        staging=staging,
        not_null=not_null[embedding],
        index_name=index_name,
        index_valid=None if validity is None else bool(validity[0]),
        row_estimate=int(row_estimate),
    )
