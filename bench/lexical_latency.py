"""Lexical search latency at 1,000,000 records: BM25 over lexical documents against the previous
lexical path (websearch_to_tsquery, the first 200 chunk matches, ts_rank_cd), in one run.

    python bench/lexical_latency.py [--rows 1000000] [--queries 30] [--rebuild]

Data: chitchat messages under fresh keys over 24 sources of skewed sizes (300k down to 1k rows), one
record and one chunk each, with the lexical documents and statistics semindex keeps, both GIN indexes
(the chunks' one the previous path reads, the lexical documents' one BM25 reads). No vectors: this
measures lexical search alone. The database (semindex_bench_lexical) is kept between runs.

For scopes of 0.1%, 1%, 10%, 50% and 100% of the rows it prints p50/p95 (after an untimed warm-up
pass) for the scope's most common term and for natural-language queries (real messages), for both
paths, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_database import bench_database, scopes_by_share, source_sizes  # noqa: E402
from semindex import indexes  # noqa: E402
from semindex.builders.sample_corpus import iter_chitchat_messages  # noqa: E402
from semindex.database import Database  # noqa: E402
from semindex.search import Scope, Searcher, SearchRequest  # noqa: E402
from semindex.search.fanout import default_fanout  # noqa: E402
from semindex.search.sources import sources_in_scope  # noqa: E402
from semindex.sql_files import statement  # noqa: E402

DATABASE = "semindex_bench_lexical"
QUERY_TEXTS_FROM = 200_000  # real messages past the ones the corpus repeats most, as queries

# The previous lexical path, as it was: per source, the first 200 matches of websearch_to_tsquery in
# index order, ranked by ts_rank_cd; then ts_headline for the page.
PREVIOUS_SOURCE = """
WITH query AS (SELECT websearch_to_tsquery('simple', %(query)s) AS tsq),
candidates AS MATERIALIZED (
    SELECT c.chunk_id FROM semindex.chunks AS c
    WHERE c.connector_instance_id = %(instance)s AND c.stream = %(stream)s
      AND c.document @@ websearch_to_tsquery('simple', %(query)s)
    LIMIT 200)
SELECT c.chunk_id, ts_rank_cd(c.document, query.tsq) AS rank
FROM candidates JOIN semindex.chunks AS c USING (chunk_id), query
ORDER BY rank DESC, c.record_key, c.chunk_id LIMIT 25
"""
PREVIOUS_GLOBAL = PREVIOUS_SOURCE.replace(
    "c.connector_instance_id = %(instance)s AND c.stream = %(stream)s\n      AND ", "")
PREVIOUS_SNIPPETS = """
SELECT c.chunk_id, ts_headline('simple', c.content, websearch_to_tsquery('simple', %s), 'MaxFragments=1, MaxWords=35, MinWords=12')
FROM semindex.chunks AS c WHERE c.chunk_id = ANY(%s)
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def open_database(rebuild: bool) -> tuple[Database, bool]:
    db, _ = bench_database(DATABASE, rebuild=rebuild, max_connections=12)
    with db.connection() as conn:
        built = conn.execute("SELECT to_regclass('semindex.bench_complete') IS NOT NULL").fetchone()[0]
    return db, built


def build(db: Database, rows: int, messages: list[str]) -> None:
    log(f"loading {rows} records over 24 sources")
    row_no = 0
    with db.connection() as conn:
        for source, size in source_sizes(rows).items():
            with conn.cursor().copy(
                "COPY semindex.raw_records (connector_id, connector_instance_id, stream, record_key, fields, "
                "updated_at, content_sha256, chunked_sha256) FROM STDIN"
            ) as copy:
                for i in range(row_no, row_no + size):
                    sha = i.to_bytes(8, "big").rjust(32, b"\0")
                    copy.write_row(("chitchat", source, "messages", f"k{i:08d}", json.dumps({"text": messages[i % len(messages)]}),
                                    "2024-01-01T00:00:00Z", sha, sha))
            conn.execute(
                "INSERT INTO semindex.chunks (record_id, connector_id, connector_instance_id, stream, record_key, field, "
                "chunk_no, content, content_sha256, semantic_key) SELECT record_id, connector_id, connector_instance_id, "
                "stream, record_key, 'text', 0, fields->>'text', sha256(convert_to(fields->>'text', 'UTF8')), content_sha256 "
                "FROM semindex.raw_records WHERE connector_instance_id = %s", (source,))
            conn.commit()
            row_no += size
    log("writing lexical documents and statistics (the chunk stage's own statements)")
    with db.connection() as conn:
        ids = [row[0] for row in conn.execute("SELECT record_id FROM semindex.raw_records ORDER BY record_id")]
    started = time.perf_counter()
    for start in range(0, len(ids), 20_000):
        with db.connection() as conn:
            conn.execute(statement("chunks", "add_lexical_documents"), {"records": ids[start:start + 20_000]})
    log(f"  {len(ids)} records in {time.perf_counter() - started:.0f}s")
    with db.autocommit_connection() as conn:
        conn.execute("UPDATE semindex.lexical_backfill SET done = true")
        log("building both GIN indexes")
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("CREATE INDEX IF NOT EXISTS chunks_scope_document_gin ON semindex.chunks USING gin (connector_instance_id, stream, document)")
    indexes.build_lexical_index(db, "1GB")
    with db.autocommit_connection() as conn:
        conn.execute("INSERT INTO semindex.retained_size_projection (connector_instance_id, stream, dirty) "
                     "SELECT DISTINCT connector_instance_id, stream, false FROM semindex.raw_records ON CONFLICT DO NOTHING")
        conn.execute("VACUUM ANALYZE")
        conn.execute("CREATE TABLE semindex.bench_complete (rows bigint)")


def previous_search(db: Database, query: str, scope: Scope) -> int:
    """The previous lexical path end to end: per-source windows through the fan-out, then snippets."""
    sources = [(s.connector_instance_id, s.stream) for s in sources_in_scope(db, scope)] if scope.names_sources else [None]

    def run(source):
        with db.connection() as conn:
            conn.execute("SELECT set_config('max_parallel_workers_per_gather', '0', true)")
            if source is None:
                return conn.execute(PREVIOUS_GLOBAL, {"query": query}).fetchall()
            conn.execute("SELECT set_config('enable_seqscan', 'off', true)")
            return conn.execute(PREVIOUS_SOURCE, {"query": query, "instance": source[0], "stream": source[1]}).fetchall()

    rows = sorted((row for rows in default_fanout().map(run, sources) for row in rows), key=lambda row: -row[1])[:10]
    with db.connection() as conn:
        conn.execute(PREVIOUS_SNIPPETS, (query, [row[0] for row in rows])).fetchall()
    return len(rows)


def timed(function, repeats: list) -> tuple[float, float]:
    latencies = []
    for argument in repeats:
        started = time.perf_counter()
        function(argument)
        latencies.append(1000 * (time.perf_counter() - started))
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    messages = [r["fields"]["text"] for r in iter_chitchat_messages()]
    db, built = open_database(args.rebuild)
    if not built:
        build(db, args.rows, messages[:QUERY_TEXTS_FROM])
    queries = [text for text in messages[QUERY_TEXTS_FROM:] if len(text.split()) >= 3][: args.queries]
    # 258k message strings would make every cyclic collection during the timed searches walk them.
    del messages
    gc.collect()
    sizes = source_sizes(args.rows)
    total = sum(sizes.values())
    scopes = scopes_by_share(sizes)
    searcher = Searcher(db)
    results = {}
    for name, instances in scopes.items():
        scope = Scope(connector_instance_ids=instances)
        with db.connection() as conn:
            common = conn.execute(
                "SELECT lexeme FROM semindex.lexical_terms WHERE cardinality(%s::text[]) = 0 OR connector_instance_id = ANY(%s) "
                "GROUP BY lexeme ORDER BY sum(documents) DESC LIMIT 1", (list(instances), list(instances))).fetchone()[0]
        cell = {"scope_rows": sum(sizes[s] for s in instances) if instances else total, "common_term": common}
        for label, texts in (("common term", [common] * args.queries), ("natural language", queries)):
            def ours(text):
                return searcher.search(SearchRequest(text, mode="lexical", k=10, scope=scope))

            def theirs(text):
                return previous_search(db, text, scope)

            for function in (ours, theirs):  # untimed warm-up for both paths alike
                for text in texts[:5]:
                    function(text)
            bm25 = timed(ours, texts)
            previous = timed(theirs, texts)
            rankings = {ours(text).meta.lexical.ranking for text in texts[:10]}
            cell[label] = {"bm25_p50_ms": round(bm25[0], 2), "bm25_p95_ms": round(bm25[1], 2),
                           "previous_p50_ms": round(previous[0], 2), "previous_p95_ms": round(previous[1], 2),
                           "p50_ratio": round(bm25[0] / previous[0], 2), "bm25_ranking": sorted(rankings)}
        results[name] = cell
        log(f"{name}: {json.dumps(cell)}")
    print(json.dumps(results, indent=2))
    print("\nscope | query            | BM25 p50 / p95 ms | previous p50 / p95 ms | p50 ratio | BM25 ranking")
    for name, cell in results.items():
        for label in ("common term", "natural language"):
            c = cell[label]
            print(f"{name:>5} | {label:<16} | {c['bm25_p50_ms']:>7} / {c['bm25_p95_ms']:<7} | {c['previous_p50_ms']:>7} / "
                  f"{c['previous_p95_ms']:<7} | {c['p50_ratio']:>9} | {','.join(c['bm25_ranking'])}")
    db.close()


if __name__ == "__main__":
    main()
