"""The vector store's configuration: every key of the seed (dataknobs-data's PgVectorStore), with
its default, checked once with errors that name the key and the value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace

from semindex import settings
from semindex.errors import InvalidInput
from semindex.vectors.metric import Metric, metric_named

# The seed's metric names, and semindex's (one home for metrics: semindex.vectors.metric).
METRIC_ALIASES = {"cosine": "cosine", "euclidean": "l2", "l2": "l2", "inner_product": "ip", "ip": "ip", "l1": "l1"}
ID_TYPES = ("uuid", "text")
INDEX_TYPES = ("none", "hnsw", "ivfflat")
COLUMN_NAMES = ("id", "embedding", "content", "metadata", "domain_id", "document_id", "chunk_index", "created_at")
MAX_DIMENSIONS = 16_000  # pgvector's vector type
MAX_INDEX_DIMENSIONS = 2_000  # pgvector's HNSW and IVFFlat on vector
MAX_IDENTIFIER_BYTES = 63  # PostgreSQL truncates longer names (two would collide)
INDEX_PARAMS = {"hnsw": ("m", "ef_construction"), "ivfflat": ("lists",)}


@dataclass(frozen=True)
class StoreConfig:
    dimensions: int
    connection_string: str | None = None  # None: DATABASE_URL
    metric: str = "cosine"
    schema: str = "edubot"
    table_name: str = "knowledge_embeddings"
    pool_min_size: int = 2
    pool_max_size: int = 10
    auto_create_table: bool = True
    id_type: str = "uuid"
    columns: Mapping[str, str] = field(default_factory=dict)
    index_type: str = "none"
    auto_create_index: bool = False
    min_rows_for_index: int = 1000
    index_params: Mapping[str, int] = field(default_factory=dict)
    domain_id: str | None = None

    @classmethod
    def from_mapping(cls, values: Mapping | StoreConfig) -> StoreConfig:
        if isinstance(values, StoreConfig):
            return values.validated()
        if not isinstance(values, Mapping):
            raise InvalidInput(f"the store config must be a mapping or a StoreConfig, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidInput(f"unknown store config key(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
        if "dimensions" not in values or values["dimensions"] is None:
            raise InvalidInput("the store config needs `dimensions` (the length of every vector, e.g. 384)")
        return cls(**values).validated()

    def validated(self) -> StoreConfig:
        if isinstance(self.dimensions, bool) or not isinstance(self.dimensions, int) or not 1 <= self.dimensions <= MAX_DIMENSIONS:
            raise InvalidInput(f"dimensions={self.dimensions!r} must be a whole number from 1 to {MAX_DIMENSIONS:,} (pgvector's limit)")
        if self.metric not in METRIC_ALIASES:
            raise InvalidInput(f"metric {self.metric!r} is not one of {', '.join(METRIC_ALIASES)}")
        if self.id_type not in ID_TYPES:
            raise InvalidInput(f"id_type {self.id_type!r} is not one of {', '.join(ID_TYPES)}")
        if self.index_type not in INDEX_TYPES:
            raise InvalidInput(f"index_type {self.index_type!r} is not one of {', '.join(INDEX_TYPES)}")
        for name in ("pool_min_size", "pool_max_size", "min_rows_for_index"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "min_rows_for_index" else 1):
                raise InvalidInput(f"{name}={value!r} must be a positive whole number")
        if self.pool_min_size > self.pool_max_size:
            raise InvalidInput(f"pool_min_size={self.pool_min_size} is above pool_max_size={self.pool_max_size}")
        unknown = sorted(set(self.columns) - set(COLUMN_NAMES))
        if unknown:
            raise InvalidInput(f"unknown column mapping(s) {', '.join(map(repr, unknown))}; logical names: {', '.join(COLUMN_NAMES)}")
        names = [self.schema, self.table_name, *self.column_map.values()]
        for name in names:
            if not isinstance(name, str) or not name or len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES or "\x00" in name:
                raise InvalidInput(f"name {name!r} must be 1 to {MAX_IDENTIFIER_BYTES} bytes of text (PostgreSQL identifiers)")
            if "%" in name:
                # psycopg does not escape % inside identifiers: "a%sb" would be read as a placeholder.
                raise InvalidInput(f"name {name!r} contains '%', which PostgreSQL drivers read as a placeholder; rename it")
        if len(set(self.column_map.values())) != len(COLUMN_NAMES):
            raise InvalidInput(f"two logical columns map to one column: {dict(self.column_map)}")
        if self.domain_id is not None and (not isinstance(self.domain_id, str) or not self.domain_id or len(self.domain_id) > 100):
            raise InvalidInput(f"domain_id={self.domain_id!r} must be 1 to 100 characters (the column is varchar(100))")
        check_index_params(self.index_type, self.index_params)
        return self

    @property
    def column_map(self) -> dict[str, str]:
        return {name: self.columns.get(name, name) for name in COLUMN_NAMES}

    @property
    def metric_spec(self) -> Metric:
        return metric_named(METRIC_ALIASES[self.metric])

    def url(self) -> str:
        url = self.connection_string or settings.external_database_url()
        if not url:
            raise InvalidInput("no database: give `connection_string` in the store config or set DATABASE_URL")
        return url

    def scoped(self, domain_id: str | None) -> StoreConfig:
        return replace(self, domain_id=domain_id).validated()


def check_index_params(index_type: str, params: Mapping) -> None:
    allowed = INDEX_PARAMS.get(index_type, ())
    for name, value in (params or {}).items():
        if index_type in INDEX_PARAMS and name not in allowed:
            raise InvalidInput(f"index parameter {name!r} does not apply to {index_type} (it takes {', '.join(allowed)})")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
            raise InvalidInput(f"index parameter {name}={value!r} must be a whole number from 1 to 100,000")
