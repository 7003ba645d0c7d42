"""Distance metrics: everything semindex knows about one, in one place.

pgvector's operator and HNSW operator class, the same distance computed in numpy (for brute-force
scans without pgvector), and a similarity: a higher-is-better score a person or a threshold can read,
whatever the metric.

  cosine  distance 1 - a.q/(|a||q|)   similarity 1 - distance (the cosine, -1..1)
  l2      distance |a - q|            similarity 1 / (1 + distance)  (0..1, 1 = identical)
  ip      distance -a.q               similarity -distance (the inner product itself)
  l1      distance sum |a - q|        similarity 1 / (1 + distance)  (HNSW only: IVFFlat has no l1)

A NaN distance (a zero vector under cosine) is +inf in numpy, so it sorts last as in PostgreSQL.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from psycopg import sql

from semindex.errors import InvalidInput


def _cosine(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    return 1.0 - (matrix @ query) / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))


def _l2(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    return np.linalg.norm(matrix - query, axis=1)


def _l1(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    return np.abs(matrix - query).sum(axis=1)


def _negative_inner_product(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    return -(matrix @ query)


@dataclass(frozen=True)
class Metric:
    name: str
    operator: str  # pgvector's distance operator
    opclass: str  # pgvector's HNSW operator class for the vector type
    _distances: Callable[[np.ndarray, np.ndarray], np.ndarray]
    _similarity: Callable[[float], float]

    @property
    def sql_operator(self) -> sql.SQL:
        return sql.SQL(self.operator)

    @property
    def sql_opclass(self) -> sql.SQL:
        return sql.SQL(self.opclass)

    def distances(self, matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
        """pgvector's distance from each row of `matrix` to `query`; NaN becomes +inf (sorts last)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            distances = self._distances(np.asarray(matrix, dtype=np.float64), np.asarray(query, dtype=np.float64))
        return np.where(np.isnan(distances), np.inf, distances)

    def similarity(self, distance: float) -> float:
        """Higher is better, for every metric; -inf for an infinite (or NaN) distance."""
        if distance is None or math.isnan(distance) or math.isinf(distance):
            return -math.inf
        return float(self._similarity(float(distance)))


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("cosine", "<=>", "vector_cosine_ops", _cosine, lambda d: 1.0 - d),
        Metric("l2", "<->", "vector_l2_ops", _l2, lambda d: 1.0 / (1.0 + d)),
        Metric("ip", "<#>", "vector_ip_ops", _negative_inner_product, lambda d: -d),
        Metric("l1", "<+>", "vector_l1_ops", _l1, lambda d: 1.0 / (1.0 + d)),
    )
}
METRIC_NAMES = tuple(METRICS)
# What an embedding version may declare (the CHECK on semindex.embedding_versions); the vector store
# (semindex.store) takes every metric.
VERSION_METRIC_NAMES = ("cosine", "l2", "ip")


def metric_named(name: str) -> Metric:
    try:
        return METRICS[name]
    except (KeyError, TypeError):
        raise InvalidInput(f"distance metric {name!r} is not one of {', '.join(METRIC_NAMES)}") from None
