"""One home for vectors: the embedding version record (version.py), the distance metric (metric.py)
and the storage strategy, pgvector or JSONB (storage.py)."""

from semindex.vectors.metric import METRIC_NAMES, METRICS, Metric, metric_named
from semindex.vectors.storage import JSONB, PGVECTOR, VectorStorage, storage_for
from semindex.vectors.version import EmbeddingVersion, active_version, all_versions, find_version, get_version

__all__ = [
    "JSONB", "METRICS", "METRIC_NAMES", "PGVECTOR", "EmbeddingVersion", "Metric", "VectorStorage",
    "active_version", "all_versions", "find_version", "get_version", "metric_named", "storage_for",
]
