"""Vector-store writes and filtered search (semindex.store), next to the seed's ways, in one run.

    python bench/store_throughput.py [--rows 100000] [--dims 384] [--queries 50] [--batch 5000]
                                     [--baseline-rows 10000]
    python bench/store_throughput.py --quick          # a look: 10,000 rows, 10 queries

Data: --rows + --queries float32 vectors from tests/synthetic_vectors.py's `clustered_vectors` (64
Gaussian clusters, sigma 0.35 a dimension around centres of norm ~sqrt(dims), normalised; cosine);
the last --queries are held out as queries (same distribution, never stored). Row i has id
UUID(int=i+1) and metadata {"bucket": i % 1000, "tag": one of 7, "doc": "d<i // 20>"}.

Writes: `SyncPgVectorStore.add_vectors` in batches of --batch (binary COPY to a staging table and one
merge per call), for every row, into a store created by the store itself (its table, GIN and domain
index; no ANN index yet). Baseline in the same run: the seed's write path (dataknobs-data
PgVectorStore.add_vectors), one `INSERT ... VALUES (...) ON CONFLICT (id) DO UPDATE` per row on one
psycopg AsyncConnection in autocommit (the seed awaits one asyncpg execute per row outside any
transaction: one transaction and one commit per row), the vector sent as the seed formats it
('[x,y,...]' text, cast ::vector) and metadata as json.dumps text, into a table of the same shape
(`CREATE TABLE ... (LIKE store table INCLUDING ALL)`: same columns, primary key, GIN and domain
index), on the first --baseline-rows rows. Prints rows/s of both and their ratio (target >= 10x).

Search: after the load, VACUUM ANALYZE and one HNSW index through `create_index("hnsw", {"m": 16,
"ef_construction": 64})` (maintenance_work_mem set on the scratch database, --maintenance-work-mem).
For filters {"bucket": {"$lt": N}} matching 0.1%, 1%, 10%, 50% and 100% of the rows, per query
(untimed warm-up pass first, then semindex and the peer query alternately): semindex's
`search(q, k=10, filter=...)` and the plain query the peers run on the same table and index,
`SELECT id FROM t WHERE (metadata->>'bucket')::int < N ORDER BY embedding <=> q LIMIT 10`, default
settings (no ef_search, no iterative scan). Each: p50/p95 latency, recall@10 against exact numpy
search over the rows the filter allows, the share of short answers (fewer than 10 hits) and of hits
outside the filter; semindex's plans (`store.last_plan.kind`) and the peer's plan (EXPLAIN).

The database (semindex_bench_store, on the embedded server under SEMINDEX_HOME, default
/tmp/benchhome, or on DATABASE_URL's server) is dropped and created anew at every start and kept
after, for inspection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_database import database_on, log, percentile  # noqa: E402

from semindex import settings
from semindex.database import embedded_database_url, open_database
from semindex.store import SyncPgVectorStore

DATABASE = "semindex_bench_store"
SCHEMA = "bench"
TABLE = "store_rows"
SEED_TABLE = "seed_rows"
BUCKETS = 1000
SHARES = (("0.1%", 0.001), ("1%", 0.01), ("10%", 0.10), ("50%", 0.50), ("100%", 1.0))
TAGS = ("news", "sport", "science", "travel", "food", "music", "film")
CENTERS = 64
HNSW = {"m": 16, "ef_construction": 64}
K = 10


def clustered_vectors(rng: np.random.Generator, rows: int, dims: int, centers: np.ndarray) -> np.ndarray:
    """tests/synthetic_vectors.py's generator (copied: importing the tests package pulls in the
    database layers): a random centre per row plus Gaussian noise, normalised."""
    picks = rng.integers(0, len(centers), size=rows)
    vectors = centers[picks] + 0.35 * rng.normal(size=(rows, dims))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def database_url(server_url: str) -> str:
    return database_on(server_url, DATABASE)


def fresh_database(server_url: str, maintenance_work_mem: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
        # The HNSW build's memory (the graph of 100,000 x 384 does not fit the default 64MB).
        conn.execute(sql.SQL("ALTER DATABASE {} SET maintenance_work_mem = {}").format(
            sql.Identifier(DATABASE), sql.Literal(maintenance_work_mem)))
    url = database_url(server_url)
    open_database(url).close()  # bootstrap: the vector extension (and semindex's schema)
    return url


def metadata_for(rows: int) -> list[dict]:
    return [{"bucket": i % BUCKETS, "tag": TAGS[i % len(TAGS)], "doc": f"d{i // 20}"} for i in range(rows)]


async def seed_row_by_row(url: str, table: str, vectors: np.ndarray, ids: list[str], metadata: list[dict]) -> list[float]:
    """The seed's add_vectors: one upsert per row, each its own transaction; seconds per 1,000 rows."""
    statement = (f"INSERT INTO {table} (id, domain_id, document_id, chunk_index, content, embedding, metadata) "
                 "VALUES (%s::uuid, %s, %s, %s, %s, %s::vector, %s::jsonb) "
                 "ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, metadata = EXCLUDED.metadata, "
                 "content = EXCLUDED.content, domain_id = EXCLUDED.domain_id, document_id = EXCLUDED.document_id, "
                 "chunk_index = EXCLUDED.chunk_index")
    laps = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        for i, (vector, row_id, meta) in enumerate(zip(vectors, ids, metadata)):
            document_id = meta.get("document_id", meta.get("source"))
            chunk_index = meta.get("chunk_index", i)
            content = meta.get("source_text", meta.get("content", ""))
            domain_id = meta.get("domain_id")
            await conn.execute(statement, (row_id, domain_id, document_id, chunk_index, content,
                                           f"[{','.join(str(x) for x in vector.tolist())}]", json.dumps(meta)))
            if (i + 1) % 1000 == 0 or i + 1 == len(ids):
                now = time.perf_counter()
                laps.append(now - started)
                started = now
    return laps


def top_plan_node(plan: dict) -> str:
    """The scan under the LIMIT: 'Index Scan using <index>' or 'Seq Scan' and so on."""
    node = plan
    while node.get("Node Type") in ("Limit", "Sort", "Result", "Gather Merge", "Gather") and node.get("Plans"):
        node = node["Plans"][0]
    name = node.get("Node Type", "?")
    return f"{name} using {node['Index Name']}" if "Index Name" in node else name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--batch", type=int, default=5_000, help="rows per add_vectors call (default %(default)s)")
    parser.add_argument("--baseline-rows", type=int, default=10_000, help="rows for the row-by-row baseline (default %(default)s)")
    parser.add_argument("--maintenance-work-mem", default="1GB", help="for the HNSW build (default %(default)s)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--quick", action="store_true", help="10,000 rows, 10 queries, 1,000 baseline rows")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.queries, args.baseline_rows, args.batch = 10_000, 10, 1_000, 2_000
    args.baseline_rows = min(args.baseline_rows, args.rows)

    home = Path(os.environ.get("SEMINDEX_HOME") or "/tmp/benchhome")
    server_url = settings.external_database_url() or embedded_database_url(home)
    url = fresh_database(server_url, args.maintenance_work_mem)
    log(f"database {DATABASE} created anew; {args.rows} rows x {args.dims} dims, {args.queries} queries")

    rng = np.random.default_rng(args.seed)
    centers = rng.normal(size=(CENTERS, args.dims))
    everything = clustered_vectors(rng, args.rows + args.queries, args.dims, centers)
    matrix, queries = everything[: args.rows], everything[args.rows:]
    ids = [str(uuid.UUID(int=i + 1)) for i in range(args.rows)]
    metadata = metadata_for(args.rows)
    buckets = np.arange(args.rows) % BUCKETS

    results: dict = {"rows": args.rows, "dims": args.dims, "queries": args.queries, "batch": args.batch,
                     "baseline_rows": args.baseline_rows}
    config = {"connection_string": url, "dimensions": args.dims, "metric": "cosine", "schema": SCHEMA,
              "table_name": TABLE, "index_type": "hnsw"}
    table = f"{SCHEMA}.{TABLE}"
    with SyncPgVectorStore(config) as store, psycopg.connect(url, autocommit=True) as conn:
        results["server"] = {name: conn.execute(f"SHOW {name}").fetchone()[0]
                             for name in ("server_version", "maintenance_work_mem", "shared_buffers", "work_mem", "jit",
                                          "synchronous_commit")}
        results["server"]["pgvector"] = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
        conn.execute(f"CREATE TABLE {SCHEMA}.{SEED_TABLE} (LIKE {table} INCLUDING ALL)")

        # ---- writes: the seed's row-by-row upsert, then add_vectors in batches ---------------------
        n = args.baseline_rows
        log(f"seed baseline: {n} rows, one autocommitted INSERT ... ON CONFLICT each")
        laps = asyncio.run(seed_row_by_row(url, f"{SCHEMA}.{SEED_TABLE}", matrix[:n], ids[:n], metadata[:n]))
        seed_seconds = sum(laps)
        assert conn.execute(f"SELECT count(*) FROM {SCHEMA}.{SEED_TABLE}").fetchone()[0] == n
        seed_rate = n / seed_seconds
        log(f"  {seed_rate:,.0f} rows/s ({seed_seconds:.1f} s)")

        log(f"add_vectors: {args.rows} rows in batches of {args.batch}")
        batch_seconds = []
        for start in range(0, args.rows, args.batch):
            stop = min(start + args.batch, args.rows)
            t0 = time.perf_counter()
            store.add_vectors(matrix[start:stop], ids=ids[start:stop], metadata=metadata[start:stop])
            batch_seconds.append(time.perf_counter() - t0)
        add_seconds = sum(batch_seconds)
        assert store.count() == args.rows
        batch_rates = [min(args.batch, args.rows - i * args.batch) / s for i, s in enumerate(batch_seconds)]
        first = batch_seconds[: -(-n // args.batch)]  # the batches that cover the baseline's rows
        first_rows = min(len(first) * args.batch, args.rows)
        add_rate = args.rows / add_seconds
        log(f"  {add_rate:,.0f} rows/s ({add_seconds:.1f} s); batches {[round(s, 2) for s in batch_seconds]}")
        results["writes"] = {
            "seed_row_by_row": {"rows": n, "seconds": round(seed_seconds, 2), "rows_per_second": round(seed_rate),
                                "median_rows_per_second_per_1000": round(1000 / statistics.median(laps[:-1] or laps)),
                                "how": "psycopg AsyncConnection, autocommit: one INSERT ... ON CONFLICT (id) DO UPDATE "
                                       "and one commit per row; vector as '[..]' text, metadata as json text"},
            "semindex_add_vectors": {"rows": args.rows, "seconds": round(add_seconds, 2), "rows_per_second": round(add_rate),
                                     "median_batch_rows_per_second": round(statistics.median(batch_rates)),
                                     "first_rows": first_rows,
                                     "first_rows_per_second": round(first_rows / sum(first)),
                                     "batch_seconds": [round(s, 3) for s in batch_seconds]},
            "ratio": round(add_rate / seed_rate, 1),
        }

        # ---- the index ---------------------------------------------------------------------------
        log("VACUUM ANALYZE, then the HNSW index through create_index")
        conn.execute(f"VACUUM ANALYZE {table}")
        t0 = time.perf_counter()
        built = store.create_index("hnsw", HNSW)
        results["hnsw_build"] = {"seconds": round(time.perf_counter() - t0, 1), "created": built.created,
                                 "concurrently": built.concurrently, "params": built.params}
        log(f"  {results['hnsw_build']}")

        # ---- filtered search ---------------------------------------------------------------------
        register_vector(conn)
        # Exact references first: numpy's BLAS threads keep spinning after a large product and would
        # steal the two cores from the timed queries that follow.
        distances = 1.0 - queries @ matrix.T  # (queries, rows)
        cells: dict = {}
        for name, share in SHARES:
            limit = round(share * BUCKETS)
            allowed = buckets < limit
            matching = int(allowed.sum())
            want = min(K, matching)
            kth = np.partition(distances[:, allowed], want - 1, axis=1)[:, want - 1]
            time.sleep(1.0)
            spec = {"bucket": {"$lt": limit}}
            peer_sql = sql.SQL("SELECT id::text FROM {} WHERE (metadata->>'bucket')::int < {} "
                               "ORDER BY embedding <=> %s LIMIT 10").format(sql.Identifier(SCHEMA, TABLE), sql.Literal(limit))
            explain = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + peer_sql, (queries[0],)).fetchone()[0]
            peer_plan = top_plan_node(explain[0]["Plan"])

            def score(hits: list[str], q: int, allowed=allowed, kth=kth, want=want) -> tuple[float, int]:
                """recall@10 (hits inside the filter no farther than the exact 10th) and hits outside it."""
                rows = [uuid.UUID(h).int - 1 for h in hits]
                outside = sum(not allowed[r] for r in rows)
                good = sum(bool(allowed[r]) and distances[q, r] <= kth[q] + 1e-5 for r in rows)
                return good / want, outside

            for q in range(args.queries):  # an untimed pass: warm caches for both alike
                store.search(queries[q], k=K, filter=spec)
                conn.execute(peer_sql, (queries[q],)).fetchall()
            ours = {"latency": [], "recall": [], "short": 0, "outside": 0, "plans": Counter(), "widenings": [], "matching": set()}
            peer = {"latency": [], "recall": [], "short": 0, "outside": 0, "returned": []}
            for q in range(args.queries):
                t0 = time.perf_counter()
                hits = store.search(queries[q], k=K, filter=spec)
                ours["latency"].append(1000 * (time.perf_counter() - t0))
                plan = store.last_plan
                ours["plans"][plan.kind] += 1
                ours["widenings"].append(plan.widenings)
                ours["matching"].add(plan.matching)
                recall, outside = score([h[0] for h in hits], q)
                ours["recall"].append(recall)
                ours["outside"] += outside
                ours["short"] += len(hits) < want

                t0 = time.perf_counter()
                got = [row[0] for row in conn.execute(peer_sql, (queries[q],))]
                peer["latency"].append(1000 * (time.perf_counter() - t0))
                recall, outside = score(got, q)
                peer["recall"].append(recall)
                peer["outside"] += outside
                peer["short"] += len(got) < want
                peer["returned"].append(len(got))
            cell = {
                "limit": limit, "matching_rows": matching, "share": round(matching / args.rows, 4),
                "semindex": {"p50_ms": round(percentile(ours["latency"], 50), 2), "p95_ms": round(percentile(ours["latency"], 95), 2),
                             "recall@10": round(statistics.mean(ours["recall"]), 4),
                             "short_share": round(ours["short"] / args.queries, 4), "hits_outside_filter": ours["outside"],
                             "plans": dict(ours["plans"]), "max_widenings": max(ours["widenings"]),
                             "plan_matching": sorted(m for m in ours["matching"] if m is not None) or None},
                "peer": {"p50_ms": round(percentile(peer["latency"], 50), 2), "p95_ms": round(percentile(peer["latency"], 95), 2),
                         "recall@10": round(statistics.mean(peer["recall"]), 4),
                         "short_share": round(peer["short"] / args.queries, 4), "hits_outside_filter": peer["outside"],
                         "mean_hits_returned": round(statistics.mean(peer["returned"]), 2), "plan": peer_plan},
            }
            cells[name] = cell
            log(f"{name}: {json.dumps(cell)}")
        results["search"] = cells

    writes = results["writes"]
    print(json.dumps(results, indent=2))
    print(f"\nwrites: add_vectors {writes['semindex_add_vectors']['rows_per_second']:,} rows/s "
          f"({args.rows:,} rows, batches of {args.batch:,}; median batch {writes['semindex_add_vectors']['median_batch_rows_per_second']:,}) "
          f"vs seed row-by-row {writes['seed_row_by_row']['rows_per_second']:,} rows/s ({args.baseline_rows:,} rows): "
          f"{writes['ratio']}x  (target >= 10x)")
    print(f"HNSW (m 16, ef_construction 64) built in {results['hnsw_build']['seconds']} s "
          f"(concurrently: {results['hnsw_build']['concurrently']})\n")
    print("selectivity (rows) | semindex p50 / p95 ms  recall  short  plan(s)     | "
          "peer p50 / p95 ms  recall  short  hits  plan")
    for name, cell in cells.items():
        s, p = cell["semindex"], cell["peer"]
        plans = ",".join(f"{kind}x{count}" for kind, count in s["plans"].items())
        print(f"{name:>5} ({cell['matching_rows']:>7}) | {s['p50_ms']:>8} / {s['p95_ms']:<8}  {s['recall@10']:<6}  "
              f"{s['short_share']:<5}  {plans:<11} | {p['p50_ms']:>6} / {p['p95_ms']:<8}  {p['recall@10']:<6}  "
              f"{p['short_share']:<5}  {p['mean_hits_returned']:<4}  {p['plan']}")


if __name__ == "__main__":
    main()
