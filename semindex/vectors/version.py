"""An embedding version as stored in semindex.embedding_versions, and the reads of the registry.

A version is an encoder (kind, location, revision), its dimensions and metric, the ANN engine that
serves it, its thresholds and promotion mode, and its place in the lifecycle (state, active,
rollback target). Its vectors live in a table of its own, named from its integer id only, so no
user text ever reaches an identifier.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg.rows import class_row

from semindex.database import Database
from semindex.encoders import EncoderSpec, spec_from_name
from semindex.errors import NotFound
from semindex.sql_files import statement
from semindex.vectors.metric import Metric, metric_named


@dataclass(frozen=True)
class EmbeddingVersion:
    version_id: int
    version_key: str
    encoder_name: str
    encoder_revision: str
    dimensions: int
    distance_metric: str
    active: bool
    state: str
    chunking: dict
    thresholds: dict
    promotion: str
    rollback_target: bool
    ann_engine: str = "pgvector"

    @property
    def encoder_spec(self) -> EncoderSpec:
        return spec_from_name(self.encoder_name)

    @property
    def metric(self) -> Metric:
        return metric_named(self.distance_metric)

    @property
    def vectors_table(self) -> str:
        return f"semindex.{self.table_name}"

    @property
    def table_name(self) -> str:
        return f"chunk_vectors_v{self.version_id}"

    @property
    def hnsw_index_name(self) -> str:
        return f"{self.table_name}_hnsw"


def find_version(db: Database, version_key: str) -> EmbeddingVersion | None:
    with db.connection() as conn:
        return conn.cursor(row_factory=class_row(EmbeddingVersion)).execute(
            statement("embedding_versions", "by_key"), (version_key,)
        ).fetchone()


def get_version(db: Database, version_key: str) -> EmbeddingVersion:
    version = find_version(db, version_key)
    if version is None:
        raise NotFound(f"no embedding version {version_key!r} is registered")
    return version


def active_version(db: Database) -> EmbeddingVersion | None:
    with db.connection() as conn:
        return conn.cursor(row_factory=class_row(EmbeddingVersion)).execute(
            statement("embedding_versions", "active")
        ).fetchone()


def all_versions(db: Database) -> list[EmbeddingVersion]:
    with db.connection() as conn:
        return conn.cursor(row_factory=class_row(EmbeddingVersion)).execute(
            statement("embedding_versions", "all")
        ).fetchall()
