"""Search latency and recall at 1,000,000 chunks, next to the naive pgvector query, in one run.

    python bench/search_latency.py [--rows 1000000] [--queries 30] [--rebuild]

Data: chitchat messages repeated under fresh keys over 24 sources of skewed sizes (300k down to
1k rows). Vectors are synthesised, not encoded (encoding 1M texts takes hours here): 20,000
distinct chitchat messages are encoded with all-MiniLM-L6-v2 and chunk i gets the vector of
message i mod 20,000 plus Gaussian noise (sigma 0.01 a dimension, cosine ~0.98 to its base),
renormalised. Queries are 30 other real messages, encoded with the same model. Vector and text of a
chunk are therefore not aligned: semantic figures measure the index, lexical ones the text.

Per mode and scope selectivity (0.1%, 1%, 10%, 50%, 100% of rows) it prints p50/p95 latency after an
untimed warm-up pass (query vector already cached, so the figure is planner + database) and recall@10 against a numpy exact
search, next to the naive query `WHERE scope ORDER BY embedding <=> q LIMIT k` on the same index
with default settings (how many hits it returns, too). The database (semindex_bench_search) is kept
between runs; --rebuild makes it anew.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_database import scopes_by_share, source_sizes  # noqa: E402
from semindex import indexes, lifecycle, retained_size  # noqa: E402
from semindex.database import Database, resolve_database_url  # noqa: E402
from semindex.encoders import MINILM_ENCODER_NAME, load_encoder  # noqa: E402
from semindex.partial_indexes import HotSourceBand, sync_partial_indexes  # noqa: E402
from semindex.builders.sample_corpus import iter_chitchat_messages  # noqa: E402
from semindex.search import Scope, Searcher, SearchRequest  # noqa: E402
from semindex.vectors.storage import storage_for  # noqa: E402
from semindex.vectors.version import get_version  # noqa: E402

DATABASE = "semindex_bench_search"
BASE_TEXTS = 20_000


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def database_url(server_url: str) -> str:
    base, _, query = server_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{DATABASE}" + (f"?{query}" if query else "")


def build(db: Database, rows: int, rng: np.random.Generator) -> None:
    messages = [r["fields"]["text"] for r in iter_chitchat_messages()]
    encoder = load_encoder(MINILM_ENCODER_NAME)
    log(f"encoding {BASE_TEXTS} base messages")
    base = encoder.encode(messages[:BASE_TEXTS])
    version = lifecycle.register_version(db)
    storage = storage_for(db)
    storage.create_table(db, version)
    sizes = source_sizes(rows)
    log(f"loading {rows} records, chunks and vectors over {len(sizes)} sources")
    row_no = 0
    with db.connection() as conn:
        for source, size in sizes.items():
            with conn.cursor().copy(
                "COPY semindex.raw_records (connector_id, connector_instance_id, stream, record_key, fields, "
                "updated_at, content_sha256, chunked_sha256) FROM STDIN"
            ) as copy:
                for i in range(row_no, row_no + size):
                    text = messages[i % len(messages)]
                    sha = i.to_bytes(8, "big").rjust(32, b"\0")
                    copy.write_row(("chitchat", source, "messages", f"k{i:08d}", json.dumps({"text": text}),
                                    "2024-01-01T00:00:00Z", sha, sha))
            chunk_rows = conn.execute(
                "INSERT INTO semindex.chunks (record_id, connector_id, connector_instance_id, stream, record_key, "
                "field, chunk_no, content, content_sha256, semantic_key) "
                "SELECT record_id, connector_id, connector_instance_id, stream, record_key, 'text', 0, fields->>'text', "
                "sha256(convert_to(fields->>'text', 'UTF8')), content_sha256 FROM semindex.raw_records "
                "WHERE connector_instance_id = %s ORDER BY record_id RETURNING chunk_id, record_key, content_sha256",
                (source,),
            ).fetchall()
            noise = rng.normal(scale=0.01, size=(size, version.dimensions))
            picks = np.arange(row_no, row_no + size) % BASE_TEXTS
            vectors = base[picks] + noise
            vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
            storage.copy_version_rows(conn, version, (
                (chunk_id, source, "messages", record_key, "text", sha, vector)
                for (chunk_id, record_key, sha), vector in zip(chunk_rows, vectors, strict=True)
            ))
            conn.execute("INSERT INTO semindex.retained_size_projection (connector_instance_id, stream) "
                         "VALUES (%s, 'messages') ON CONFLICT DO NOTHING", (source,))
            conn.commit()
            row_no += size
            log(f"  {source}: {size} rows")
        conn.execute("UPDATE semindex.embedding_backfill SET watermark = (SELECT max(chunk_id) FROM semindex.chunks)")
        conn.execute("UPDATE semindex.embedding_versions SET active = true, state = 'ready'")
    retained_size.refresh_projection(db)
    log("building the lexical GIN")
    indexes.build_lexical_index(db, "1GB")
    parameters = indexes.HnswParameters(m=16, ef_construction=64, maintenance_work_mem="6GB")
    log("building the HNSW index (serial)")
    started = time.perf_counter()
    indexes.build_hnsw(db, version, parameters)
    log(f"  HNSW built in {time.perf_counter() - started:.0f}s")
    report = sync_partial_indexes(db, version, HotSourceBand(), parameters)
    log(f"partial indexes: {[(m['connector_instance_id'], m['rows']) for m in report.members]}")
    with db.autocommit_connection() as conn:
        conn.execute("VACUUM ANALYZE")
    with db.connection() as conn:
        conn.execute("CREATE TABLE semindex.bench_complete (rows bigint)")
        conn.execute("INSERT INTO semindex.bench_complete VALUES (%s)", (rows,))


def load_matrix(db: Database, version) -> tuple[np.ndarray, np.ndarray, list[str]]:
    log("reading every vector for the exact reference")
    with db.connection() as conn:
        sources = [r[0] for r in conn.execute(f"SELECT DISTINCT connector_instance_id FROM {version.vectors_table} ORDER BY 1")]
        index = {s: i for i, s in enumerate(sources)}
        count = conn.execute(f"SELECT count(*) FROM {version.vectors_table}").fetchone()[0]
        matrix = np.empty((count, version.dimensions), dtype=np.float32)
        labels = np.empty(count, dtype=np.int16)
        with conn.cursor(name="vectors") as cur:
            cur.itersize = 20_000
            cur.execute(f"SELECT connector_instance_id, embedding FROM {version.vectors_table}")
            for i, (source, embedding) in enumerate(cur):
                matrix[i] = embedding.to_numpy()
                labels[i] = index[source]
    return matrix, labels, sources


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()

    server_url = resolve_database_url()
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
        if exists and args.rebuild:
            conn.execute(f'DROP DATABASE "{DATABASE}" WITH (FORCE)')
            exists = None
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
    db = Database(database_url(server_url), max_connections=12)
    with db.connection() as conn:
        complete = conn.execute("SELECT to_regclass('semindex.bench_complete')").fetchone()[0]
        built_rows = conn.execute("SELECT rows FROM semindex.bench_complete").fetchone()[0] if complete else None
    if built_rows != args.rows:
        if complete or built_rows is None:
            with psycopg.connect(server_url, autocommit=True) as conn:
                db.close()
                conn.execute(f'DROP DATABASE "{DATABASE}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
            db = Database(database_url(server_url), max_connections=12)
        build(db, args.rows, np.random.default_rng(5))

    version = get_version(db, "minilm-l6-v2")
    matrix, labels, sources = load_matrix(db, version)
    sizes = {s: int((labels == i).sum()) for i, s in enumerate(sources)}
    total = len(labels)
    scopes = scopes_by_share(sizes)

    query_texts = [r["fields"]["text"] for r in iter_chitchat_messages(limit=BASE_TEXTS + 5000)][BASE_TEXTS:]
    query_texts = [t for t in query_texts if len(t) > 20][: args.queries]
    searcher = Searcher(db)
    started = time.perf_counter()
    for text in query_texts:  # warm the query-vector cache; encode time is reported separately
        searcher.semantic.query_vector(version, text)
    encode_ms = 1000 * (time.perf_counter() - started) / len(query_texts)
    query_vectors = {t: searcher.semantic.query_vector(version, t) for t in query_texts}

    results: dict = {"rows": total, "sources": len(sizes), "encode_ms_per_query": round(encode_ms, 1), "cells": {}}
    for name, instances in scopes.items():
        rows_in_scope = sum(sizes[s] for s in instances) if instances else total
        mask = np.isin(labels, [sources.index(s) for s in instances]) if instances else np.ones(total, dtype=bool)
        scoped = matrix[mask]
        cell: dict = {"scope_rows": rows_in_scope, "share": round(rows_in_scope / total, 4)}
        scope = Scope(connector_instance_ids=instances)
        # Exact references first: numpy's BLAS threads keep spinning after a large product and would
        # steal the two cores from the timed queries that follow.
        exact_by_text = {text: np.sort(1.0 - scoped @ query_vectors[text])[:10] for text in query_texts}
        time.sleep(1.0)
        for mode in ("semantic", "lexical", "hybrid"):
            latencies, recalls, plans = [], [], set()
            for text in query_texts:  # an untimed pass: warm caches for every mode alike
                searcher.search(SearchRequest(text if mode != "lexical" else "the", mode=mode, k=10, scope=scope))
            for repeat, text in enumerate(query_texts):
                request = SearchRequest(text if mode != "lexical" else "the", mode=mode, k=10, scope=scope)
                t0 = time.perf_counter()
                response = searcher.search(request)
                elapsed = 1000 * (time.perf_counter() - t0)
                latencies.append(elapsed)
                plans |= set(response.meta.semantic_plans.values())
                if mode == "semantic":
                    exact = exact_by_text[text]
                    got = [hit.distance for hit in response.hits]
                    recalls.append(sum(d <= exact[-1] + 1e-5 for d in got) / 10)
                    assert len(response.hits) == min(10, rows_in_scope)
            cell[mode] = {"p50_ms": round(percentile(latencies, 50), 2), "p95_ms": round(percentile(latencies, 95), 2)}
            if mode == "semantic":
                cell[mode]["recall@10"] = round(statistics.mean(recalls), 4)
                cell[mode]["plans"] = sorted(plans)
        naive_latencies, naive_recalls, naive_returned, naive_results = [], [], [], []
        naive_sql = (f"SELECT embedding <=> %s FROM {version.vectors_table} "
                     + ("WHERE connector_instance_id = ANY(%s) " if instances else "")
                     + "ORDER BY embedding <=> %s LIMIT 10")
        with db.connection() as conn:
            for repeat, text in enumerate(query_texts):
                q = query_vectors[text]
                params = (q, list(instances), q) if instances else (q, q)
                t0 = time.perf_counter()
                got = [row[0] for row in conn.execute(naive_sql, params)]
                elapsed = 1000 * (time.perf_counter() - t0)
                if repeat >= 2:
                    naive_latencies.append(elapsed)
                naive_results.append(got)
                naive_returned.append(len(got))
            for got, text in zip(naive_results, query_texts):
                exact = exact_by_text[text]
                naive_recalls.append(sum(d <= exact[-1] + 1e-5 for d in got) / 10)
        cell["naive_pgvector"] = {
            "p50_ms": round(percentile(naive_latencies, 50), 2),
            "p95_ms": round(percentile(naive_latencies, 95), 2),
            "recall@10": round(statistics.mean(naive_recalls), 4),
            "mean_hits_returned": round(statistics.mean(naive_returned), 2),
        }
        results["cells"][name] = cell
        log(f"{name}: {json.dumps(cell)}")

    print(json.dumps(results, indent=2))
    print("\nselectivity | semantic p50/p95 ms (recall) | naive p50 ms (recall, hits) | lexical 'the' p50 | hybrid p50")
    for name, cell in results["cells"].items():
        s, n = cell["semantic"], cell["naive_pgvector"]
        print(f"{name:>11} | {s['p50_ms']:>7} / {s['p95_ms']:<7} ({s['recall@10']}) {','.join(s['plans'])} | "
              f"{n['p50_ms']:>7} ({n['recall@10']}, {n['mean_hits_returned']}) | {cell['lexical']['p50_ms']:>7} | {cell['hybrid']['p50_ms']:>7}")
    db.close()


if __name__ == "__main__":
    main()
