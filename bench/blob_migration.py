"""The JSONB→pgvector boot migration of a semantic_search_blob table, against the one-statement
migration a hand-written script would do, measured in the same run on identical copies.

    python bench/blob_migration.py [--rows 200000] [--batch-size 50000] [--repeats 3] [--index]

Rows are unit-norm 384-d vectors (7 decimals, as a JSON writer leaves them) over 8 connector
instances and 16 scopes, plus a few uncastable rows. For each repeat both sides start from a fresh
copy of the same table:
  * semindex: `semantic_blob.migrate` (catalog probe, quarantine, primary-key batches each in its
    own transaction, one-transaction swap, NOT NULL), asked for the index of a dimension no row
    has, so the HNSW build (timed separately with --index) does not drown the comparison;
  * baseline: ALTER TABLE ADD COLUMN, one `UPDATE ... SET embedding_vec = embedding::text::vector`,
    the swap: what the reference server ran at boot (it cannot survive a bad row or a kill).
It prints the medians and their ratio, rows/s, and with --index the HNSW build time of the partial
expression index (serial, maintenance_work_mem 256MB), and one scoped exact search on the result.
Uses a scratch database on the embedded server (or DATABASE_URL's server) and drops it after.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from semindex import semantic_blob  # noqa: E402
from semindex.database import Database, resolve_database_url  # noqa: E402

CREATE = """
CREATE TABLE {table} (
    connector_id text NOT NULL, connector_instance_id text NOT NULL, scope_key text NOT NULL,
    record_key text NOT NULL, embedding jsonb,
    PRIMARY KEY (connector_instance_id, scope_key, record_key)
)"""


def scratch_database(server_url: str) -> tuple[str, str]:
    name = f"semindex_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base, _, query = server_url.partition("?")
    return name, f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


def write_source(conn: psycopg.Connection, rows: int, seed: int = 7) -> None:
    """The source table, once; every repeat copies it."""
    rng = np.random.default_rng(seed)
    conn.execute(sql.SQL(CREATE).format(table=sql.Identifier("public", "blob_source")))
    instances = [f"instance-{n}" for n in range(8)]
    scopes = [json.dumps([f"stream-{n // 4}", f"field-{n % 4}"]) for n in range(16)]
    with conn.cursor().copy("COPY public.blob_source FROM STDIN") as copy:
        for start in range(0, rows, 10_000):
            block = rng.standard_normal((min(10_000, rows - start), 384)).astype(np.float32)
            block = np.round(block / np.linalg.norm(block, axis=1, keepdims=True), 7)
            for offset, vector in enumerate(block):
                n = start + offset
                copy.write_row(("bench", instances[n % 8], scopes[(n // 8) % 16], f"r{n:09d}", json.dumps(vector.tolist())))
        for n, bad in enumerate(["[]", '"NaN"', "[1, null]", '{"a": 1}']):
            copy.write_row(("bench", "instance-0", scopes[0], f"bad-{n}", bad))
    conn.execute("ANALYZE public.blob_source")


def fresh_copy(conn: psycopg.Connection, name: str) -> str:
    table = sql.Identifier("public", name)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
    conn.execute(sql.SQL(CREATE).format(table=table))
    conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM public.blob_source").format(table))
    conn.execute(sql.SQL("ANALYZE {}").format(table))
    conn.execute("CHECKPOINT")
    return f"public.{name}"


def baseline_migration(conn: psycopg.Connection, qualified: str) -> float:
    """The one-statement version; bad rows would abort it, so they are removed first (not timed
    against it: the reference server simply failed on them at every boot)."""
    table = sql.Identifier(*qualified.split("."))
    conn.execute(sql.SQL("DELETE FROM {} WHERE record_key LIKE 'bad-%'").format(table))
    started = time.perf_counter()
    with conn.transaction():
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN embedding_vec vector").format(table))
        conn.execute(sql.SQL("UPDATE {} SET embedding_vec = embedding::text::vector").format(table))
        conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN embedding").format(table))
        conn.execute(sql.SQL("ALTER TABLE {} RENAME COLUMN embedding_vec TO embedding").format(table))
        conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN embedding SET NOT NULL").format(table))
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--index", action="store_true", help="also time the HNSW build once")
    args = parser.parse_args(argv)

    server_url = resolve_database_url()
    name, url = scratch_database(server_url)
    results: dict = {"rows": args.rows, "batch_size": args.batch_size, "repeats": args.repeats}
    try:
        db = Database(url)
        with psycopg.connect(url, autocommit=True) as conn:
            started = time.perf_counter()
            write_source(conn, args.rows)
            results["fixture_seconds"] = round(time.perf_counter() - started, 1)
            ours, theirs = [], []
            for repeat in range(args.repeats):
                table = fresh_copy(conn, f"blob_ours_{repeat}")
                started = time.perf_counter()
                report = semantic_blob.migrate(db, table=table, batch_size=args.batch_size, dimensions=768)
                ours.append(time.perf_counter() - started)
                assert report.rows == args.rows, report
                ours[-1] -= report.index_seconds or 0.0  # the empty 768-d index: not part of the comparison
                theirs.append(baseline_migration(conn, fresh_copy(conn, f"blob_base_{repeat}")))
                print(f"repeat {repeat + 1}: semindex {ours[-1]:.1f}s, one statement {theirs[-1]:.1f}s", flush=True)
            results["semindex_median_seconds"] = round(statistics.median(ours), 2)
            results["one_statement_median_seconds"] = round(statistics.median(theirs), 2)
            results["semindex_rows_per_second"] = round(args.rows / statistics.median(ours))
            results["time_ratio_semindex_over_one_statement"] = round(statistics.median(ours) / statistics.median(theirs), 3)
            if args.index:
                started = time.perf_counter()
                report = semantic_blob.migrate(db, table="public.blob_ours_0", dimensions=384)
                results["hnsw_build_seconds"] = round(time.perf_counter() - started, 1)
                results["hnsw_index_action"] = report.index_action
            query = np.random.default_rng(1).standard_normal(384).astype(np.float32)
            query /= np.linalg.norm(query)
            started = time.perf_counter()
            hits = semantic_blob.search_blob(db, query, k=10, connector_instance_id="instance-3", table="public.blob_ours_0")
            results["vector_exact_search_ms"] = round(1000 * (time.perf_counter() - started), 1)
            results["searched_rows"] = args.rows // 8
            assert len(hits) == 10
        db.close()
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
