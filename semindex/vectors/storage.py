"""How a database stores vectors: the one place that knows pgvector from JSONB.

A database stores every version's vectors one way, chosen once (when semindex first looks at its
extensions, see semindex.database):

  pgvector  `embedding vector(d)`, loaded by binary COPY, searched by SQL operators and HNSW indexes
  jsonb     no pgvector (a server without it, or a role that may not create it): `embedding jsonb`, a
            JSON array of exactly d numbers (a CHECK enforces it), each float32 written in 9
            significant digits so it reads back exactly; no ANN index, searched by a brute-force scan

Everything else asks the strategy (`storage_for(db)`): which column type a version's table has,
how to create it, how to COPY rows into it, how to parse rows read back as text, and whether ANN
indexes exist at all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from semindex.database import JSONB_MODE, VECTOR_MODE, Database
from semindex.errors import Conflict
from semindex.sql_files import statement
from semindex.vectors.version import EmbeddingVersion

# COPY types of a version table's columns before the embedding (see copy_version_rows).
VERSION_ROW_TYPES = ("int8", "text", "text", "text", "text", "bytea")


def _as_is(text: str) -> str:
    return text


@dataclass(frozen=True)
class VectorStorage:
    mode: str  # "vector" or "jsonb": what metadata and logs call it
    ann_indexes: bool  # whether HNSW (and partial HNSW) indexes exist in this storage
    _create_table: str  # statement in sql/vectors.sql
    _create_staging: str
    _copy_type: str  # the COPY type of the embedding column

    def column_type(self, version: EmbeddingVersion) -> str:
        """The embedding column's type as format_type() prints it."""
        return f"vector({version.dimensions})" if self.mode == VECTOR_MODE else "jsonb"

    def create_table(self, db: Database, version: EmbeddingVersion,
                     capture: Callable[[psycopg.Connection], None] | None = None) -> None:
        """The version's table (idempotent), with its scope, content and field indexes, its backfill row
        and the upkeep of one representing row per distinct text (migrating an older table once);
        `capture` adds change capture in the same transaction (semindex.ann_substrate.capture)."""
        with db.connection() as conn:
            conn.execute(statement("vectors", "create_table_lock"), (version.vectors_table,))
            conn.execute(statement(
                "vectors",
                self._create_table,
                vectors=version.vectors_table,
                vectors_name=sql.Literal(version.vectors_table),
                scope_index=f"{version.table_name}_scope",
                content_index=f"{version.table_name}_content",
                field_index=f"{version.table_name}_field",
                embedding_check=f"{version.table_name}_embedding_check",
                dimensions=version.dimensions,
                version_id=version.version_id,
            ))
            if capture is not None:
                capture(conn)

    def check_column(self, db: Database, version: EmbeddingVersion) -> str:
        """The table's embedding column type; Conflict when it is not what this storage makes."""
        with db.connection() as conn:
            found = conn.execute(statement("vectors", "column_type"), (version.vectors_table,)).fetchone()[0]
        expected = self.column_type(version)
        if found != expected:
            raise Conflict(
                f"{version.vectors_table}.embedding is {found}, but this database stores vectors as {self.mode} "
                f"({'pgvector' if self.mode == VECTOR_MODE else 'no pgvector'}), where version "
                f"{version.version_key!r} needs {expected}"
            )
        return found

    def create_staging(self, conn: psycopg.Connection) -> None:
        """staged_vectors (content hash, embedding), dropped at commit: the backfill's COPY target."""
        conn.execute(statement("vectors", self._create_staging))

    def copy_rows(
        self, conn: psycopg.Connection, copy_statement: sql.Composable, types: Sequence[str],
        rows: Iterable[tuple],
    ) -> int:
        """COPY rows whose last value is a vector (binary COPY: pgvector's format, or the JSON text
        JSONB mode stores). `types` are the COPY types of the other columns. Returns the row count."""
        count = 0
        with conn.cursor().copy(copy_statement) as copy:
            copy.set_types([*types, self._copy_type])
            for row in rows:
                copy.write_row((*row[:-1], self._embedding_value(row[-1])))
                count += 1
        return count

    def copy_version_rows(self, conn: psycopg.Connection, version: EmbeddingVersion, rows: Iterable[tuple]) -> int:
        """COPY (chunk_id, connector_instance_id, stream, record_key, field, content_sha256, vector)
        rows straight into the version's table (bulk loads of known vectors: benchmarks, tests), then
        mark a representing row for each new text (the graph's elements, sql/schema.sql)."""
        count = self.copy_rows(conn, statement("vectors", "copy_version_rows", vectors=version.vectors_table),
                               VERSION_ROW_TYPES, rows)
        conn.execute(statement("vectors", "represent_texts"), (version.vectors_table,))
        return count

    def _embedding_value(self, vector):
        if self.mode == VECTOR_MODE:
            return vector
        return Jsonb(jsonb_vector_text(vector), dumps=_as_is)

    def parse(self, texts: Sequence[str], dimensions: int, where: str) -> np.ndarray:
        """Embeddings read back as text ("[0.1,-0.2,...]": pgvector's text form and a JSON array alike)
        as one float64 matrix, parsed in one pass in C. Values go through float32: what the encoder
        produced and what pgvector holds."""
        return parse_vector_texts(texts, dimensions, where)


def as_array(value) -> np.ndarray:
    """A vector as read back from PostgreSQL (pgvector's Vector, a JSON array's list or its text) as float64."""
    if isinstance(value, str):
        value = json.loads(value)
    return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, dtype=np.float64)


def parse_vector_texts(texts: Sequence[str], dimensions: int, where: str) -> np.ndarray:
    if not texts:
        return np.empty((0, dimensions))
    flat = np.fromstring(",".join(text[1:-1] for text in texts), sep=",", dtype=np.float32)
    if flat.size != len(texts) * dimensions:
        raise Conflict(f"a batch of {len(texts)} rows of {where} holds an embedding that is not a flat array of {dimensions} numbers")
    return flat.reshape(len(texts), dimensions).astype(np.float64)


def jsonb_vector_text(vector) -> str:
    """A vector as the JSON array JSONB mode stores: each float32 in 9 significant digits, the fewest
    that always read back to the same float32 (so both storages rank the same numbers), and about
    40% shorter, and faster to scan, than the float64 digits json.dumps would write."""
    return "[" + ", ".join(map("{:.9g}".format, np.asarray(vector, dtype=np.float32).tolist())) + "]"


PGVECTOR = VectorStorage(VECTOR_MODE, True, "create_table", "create_staging", "vector")
JSONB = VectorStorage(JSONB_MODE, False, "create_table_jsonb", "create_staging_jsonb", "jsonb")
_BY_MODE = {storage.mode: storage for storage in (PGVECTOR, JSONB)}


def storage_named(mode: str) -> VectorStorage:
    """The storage whose embedding column type is `mode` ("vector" or "jsonb")."""
    return _BY_MODE[mode]


def storage_for(db: Database) -> VectorStorage:
    """This database's storage, probed once per Database and cached there."""
    return storage_named(db.vector_mode or db.probe_vector_mode())
