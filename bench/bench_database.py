"""The benchmarks' databases and corpus shape: a named database on the embedded server (or on
DATABASE_URL's), kept between runs, and the 24 skewed sources the latency benchmarks spread rows over."""

from __future__ import annotations

import time

import numpy as np
import psycopg

from semindex.database import Database, resolve_database_url

# Thousands of rows per source, largest first; scaled to the benchmark's row count.
SHAPE = [300, 200, 100, 80, 60, 50, 40, 30, 25, 20, 20, 15, 12, 10, 8, 6, 5, 5, 4, 3.5, 3, 2, 1.5, 1]


def bench_database(name: str, *, rebuild: bool = False, max_connections: int = 8) -> tuple[Database, bool]:
    """The database `name` (created when missing; dropped first with `rebuild`) and whether it was there."""
    server = resolve_database_url()
    base, _, query = server.partition("?")
    url = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    with psycopg.connect(server, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
        if exists and rebuild:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = False
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    return Database(url, max_connections=max_connections), exists


def source_sizes(rows: int) -> dict[str, int]:
    total = sum(SHAPE)
    sizes = {f"s{i:02d}": int(rows * share / total) for i, share in enumerate(SHAPE)}
    sizes["s00"] += rows - sum(sizes.values())
    return sizes


def scopes_by_share(sizes: dict[str, int]) -> dict[str, tuple[str, ...]]:
    """Scopes of about 0.1%, 1%, 10% and 50% of the rows (sources by size), and every source."""
    total = sum(sizes.values())
    scopes = {share: (min(sizes, key=lambda s: abs(sizes[s] - fraction * total)),)
              for share, fraction in (("0.1%", 0.001), ("1%", 0.01), ("10%", 0.10))}
    half, running = [], 0
    for source in sorted(sizes, key=sizes.get, reverse=True):
        if running >= 0.5 * total:
            break
        half.append(source)
        running += sizes[source]
    scopes["50%"] = tuple(half)
    scopes["100%"] = ()
    return scopes


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def database_on(server_url: str, name: str) -> str:
    """The URL of database `name` on the server `server_url` points at (query kept)."""
    base, _, query = server_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")
