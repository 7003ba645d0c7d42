"""Prometheus metrics, in prometheus-client's multi-process mode: every worker writes its samples to
PROMETHEUS_MULTIPROC_DIR (which `semindex serve` sets before any worker starts) and /metrics sums
them, so the figures are the service's, whichever worker answers the scrape."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("semindex_http_requests_total", "HTTP requests answered", ["route", "method", "status"])
LATENCY = Histogram(
    "semindex_http_request_duration_seconds", "Time to answer an HTTP request", ["route", "method"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0),
)
PLANS = Counter("semindex_search_plans_total", "Search plans chosen, per source searched", ["mode", "plan"])
CACHE = Counter("semindex_query_vector_cache_total", "Query-vector cache lookups", ["result"])
POOL_WAITS = Counter("semindex_pool_waits_total", "Requests for a database connection that had to wait")
POOL_WAIT_SECONDS = Counter("semindex_pool_wait_seconds_total", "Time spent waiting for a database connection")
SHADOW = Counter("semindex_shadow_queries_total", "Live queries offered to candidate versions", ["event"])
CURSORS = Counter("semindex_cursor_pages_total", "Pages served from cursors", ["result"])
CONTENT_TYPE = CONTENT_TYPE_LATEST


def exposition() -> bytes:
    """Every worker's samples, summed (or this process's alone without a multi-process folder)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY)


def record_plans(mode: str, meta) -> None:
    for plan in meta.semantic_plans.values():
        PLANS.labels(mode, plan).inc()
    if meta.lexical is not None:
        PLANS.labels(mode, f"lexical_{meta.lexical.ranking}").inc()


def record_pool(stats: dict) -> None:
    """psycopg_pool's popped counters since the last call."""
    waits = stats.get("requests_queued", 0)
    if waits:
        POOL_WAITS.inc(waits)
        POOL_WAIT_SECONDS.inc(stats.get("requests_wait_ms", 0) / 1000)
