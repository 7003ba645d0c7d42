"""zvec beside pgvector on real vectors: engine against engine, semindex's plans end to end, filtered
search, and what keeping zvec in sync costs, all measured in one run.

    python bench/zvec_vs_pgvector.py [--rows 100000] [--queries 513] [--seconds 10] [--repeats 3]
    python bench/zvec_vs_pgvector.py --quick      # a look: 20,000 rows, 100 queries, 3 s cells, 1 repeat
    python bench/zvec_vs_pgvector.py --keep       # keep the database and the generations afterwards

Data: the first --rows distinct chitchat messages, encoded by the serving model all-MiniLM-L6-v2
(unit norm, cosine); the matrix is cached as .npy under SEMINDEX_HOME/bench_cache (encoding 100,000
texts takes tens of minutes on 2 busy cores; a killed encode resumes by blocks). Rows are shuffled
into four sources holding 2%, 10%, 50% and the remaining 38% of them (one record, one chunk, one
vector each), loaded like tests/synthetic_vectors.py (raw_records, chunks, then binary COPY into the
version tables). Queries: the judged sets' query texts (semindex.judged_sets, 513), encoded by the
same model. Two versions hold the same chunk ids and float4 vectors: one with ann_engine "zvec"
(change capture, a zvec generation from semindex.ann_substrate.builder.build, its substrate_recall
check run) and one with "pgvector" (its HNSW index). Both graphs: m 16, ef_construction 64.

Recall@10 is counted against exact numpy search over the same float32 vectors (in float64), a hit
correct when its distance is within 1e-6 of the k-th exact distance (ties); distances of every
method's hits are recomputed the same way from their chunk ids.

1. Unfiltered, an ef sweep per method, each query once (recall, p50/p95): zvec alone (a read-only
   handle on the published generation, `query_internal_ids` + `resolve_internal_ids`, HnswQueryParam
   ef), bare pgvector SQL (`SET hnsw.ef_search`; `SELECT chunk_id ... ORDER BY embedding <=> q
   LIMIT 10`, no prepared statements), and semindex's zvec and pgvector plans end to end
   (`Searcher.search` semantic, unit chunks, k 10, the query's vector given; PlannerSettings
   candidate_window = ef: both plans walk with max(window, 25); pgvector's ef ends at 1,000, zvec's
   at 2,048). At the smallest ef reaching recall 0.95 and 0.99, timed load cells of --seconds with
   1 and 2 clients (spawned processes, each its own handles and connections, looping over the
   queries after a warm-up), --repeats rounds with the methods interleaved, medians: QPS, p50/p95
   and CPU ms a query (the clients' process_time plus the PostgreSQL backends' utime+stime of this
   database, from /proc).
2. Scoped to one source of 2%, 10% and 50% of the rows, an ef sweep (40 to 1,000; zvec's to
   2,048): zvec alone (filter `source_id IN (n)`), the zvec plan (forced: exact_threshold 0,
   min_ann_share 0), bare pgvector SQL with hnsw.iterative_scan off, strict_order and
   relaxed_order (re-ordered in a materialized CTE, as pgvector documents), semindex's pgvector ANN
   plan (forced the same way), and semindex's own planner with default settings on each version
   (one cell). Recall@10, share of short answers (< 10 hits), hits outside the scope, p50/p95 and
   sequential QPS.
3. Sync costs: a full builder run against pgvector's CREATE INDEX (serial, in a transaction, as
   semindex.indexes builds it, maintenance_work_mem 1GB) and a bare zvec build from the numpy matrix;
   the delta scan (zvec plan latency with 1k, 10k and 50k pending changes, and at the engine's
   limit and one past it, beside the pgvector plan's at the same moment: rows UPDATEd in place, so
   the change log holds them and the answers stay the same; the zvec version's table has its own
   HNSW index for this phase only, so a plan that steps aside walks it); builder seconds for 1k,
   10k, 100k deleted rows and for the same rows inserted again; disk per generation against
   pgvector's index; read-only open time.

Targets: zvec >= 3x pgvector's QPS at equal recall (>= 0.95), engine against engine; semindex's zvec
plan end to end >= 1.5x its pgvector plan; recall >= 0.99 with no short answers at every scope for
the zvec plan. The summary says which are met.

The database (semindex_bench_zvec, on the embedded server under SEMINDEX_HOME, default
/tmp/benchhome) is dropped and created at the start and dropped at the end (--keep keeps it);
generations live under SEMINDEX_ZVEC_HOME, default $SEMINDEX_HOME/zvec/bench_zvec_vs_pgvector,
emptied at the start.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

os.environ.setdefault("SEMINDEX_HOME", "/tmp/benchhome")
os.environ.setdefault("SEMINDEX_ZVEC_HOME", str(Path(os.environ["SEMINDEX_HOME"]) / "zvec" / "bench_zvec_vs_pgvector"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DATABASE = "semindex_bench_zvec"
ZVEC_KEY = "bench-zvec"
PG_KEY = "bench-pgvector"
STREAM = "messages"
K = 10
M, EF_CONSTRUCTION = 16, 64
# Sources by share of the rows; a scope is one source.
SOURCES = (("s02", 0.02), ("s10", 0.10), ("s50", 0.50), ("s38", None))
SCOPES = {"2%": "s02", "10%": "s10", "50%": "s50"}
# Unfiltered ef sweeps, stopped once recall passes 0.995; pgvector's hnsw.ef_search ends at 1,000.
# semindex's plans take the ef as PlannerSettings.candidate_window and graph_window and walk with max(window, 25).
EFS = {
    "zvec": (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1000, 1536, 2048),
    "pgvector_sql": (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1000),
    "zvec_plan": (25, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1000, 1536, 2048),
    "pgvector_plan": (25, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1000),
}
SCOPED_EFS = (40, 100, 200, 400, 1000)
SCOPED_ZVEC_EFS = (*SCOPED_EFS, 2048)  # zvec's ef has no 1,000 ceiling
TARGETS = (0.95, 0.99)
UNFILTERED = ("zvec", "pgvector_sql", "zvec_plan", "pgvector_plan")
SCOPED = ("zvec", "zvec_plan", "pgvector_sql_off", "pgvector_sql_strict", "pgvector_sql_relaxed", "pgvector_plan")
PLANNER_CELLS = ("planner_zvec", "planner_pgvector")
ITERATIVE = {"pgvector_sql": "off", "pgvector_sql_off": "off", "pgvector_sql_strict": "strict_order",
             "pgvector_sql_relaxed": "relaxed_order"}
BLOCK = 5_000
WARMUP = 10


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---- real vectors, cached ---------------------------------------------------------------------------

def cache_dir() -> Path:
    from semindex import settings

    path = settings.semindex_home() / "bench_cache" / "zvec_vs_pgvector"
    path.mkdir(parents=True, exist_ok=True)
    return path


def distinct_messages(rows: int | None) -> list[str]:
    """The first `rows` distinct non-empty chitchat messages, in dataset order (all with None)."""
    from semindex.builders.sample_corpus import iter_chitchat_messages

    seen: set[str] = set()
    texts: list[str] = []
    for record in iter_chitchat_messages():
        text = record["fields"]["text"]
        if text not in seen:
            seen.add(text)
            texts.append(text)
            if rows is not None and len(texts) == rows:
                return texts
    if rows is not None:
        raise SystemExit(f"the chitchat corpus has {len(texts):,} distinct messages, fewer than --rows {rows:,}")
    return texts


def _digest(texts: list[str]) -> str:
    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]


def encoded(name: str, texts: list[str]) -> np.ndarray:
    """all-MiniLM-L6-v2 vectors of `texts` (unit norm, float32), cached under SEMINDEX_HOME in
    blocks of 5,000 (a killed encode resumes), keyed by the texts' digest."""
    from semindex.encoders import MINILM_ENCODER_NAME, load_encoder, spec_from_name

    stem = f"{name}-{len(texts)}-{_digest(texts)}"
    final = cache_dir() / f"{stem}.npy"
    if final.exists():
        return np.load(final)
    encoder, blocks = None, []
    for start in range(0, len(texts), BLOCK):
        part = cache_dir() / f"{stem}.part{start // BLOCK:04d}.npy"
        if not part.exists():
            if encoder is None:
                encoder = load_encoder(spec_from_name(MINILM_ENCODER_NAME))
            began = time.perf_counter()
            np.save(part, np.asarray(encoder.encode(texts[start:start + BLOCK]), dtype=np.float32))
            log(f"encoded {name} {min(start + BLOCK, len(texts)):,}/{len(texts):,} ({time.perf_counter() - began:.0f} s a block)")
        blocks.append(np.load(part))
    matrix = np.concatenate(blocks)
    np.save(final, matrix)
    for start in range(0, len(texts), BLOCK):
        (cache_dir() / f"{stem}.part{start // BLOCK:04d}.npy").unlink(missing_ok=True)
    return matrix


def chitchat_vectors(rows: int) -> tuple[list[str], np.ndarray]:
    """The first `rows` distinct messages and their vectors; a cached encode of more messages (the
    same prefix) is sliced instead of encoding again."""
    for path in sorted(cache_dir().glob("chitchat-*-*.npy")):
        parts = path.stem.split("-")
        if len(parts) != 3 or ".part" in path.name or int(parts[1]) < rows:
            continue
        texts = distinct_messages(int(parts[1]))
        if _digest(texts) == parts[2]:
            return texts[:rows], np.load(path, mmap_mode="r")[:rows].copy()
    texts = distinct_messages(rows)
    return texts, encoded("chitchat", texts)


def judged_queries(limit: int | None) -> tuple[list[str], np.ndarray]:
    from semindex.judged_sets import load_judged_sets

    texts = [query.text for judged in load_judged_sets() for query in judged.queries]
    vectors = encoded("judged-queries", texts)
    if limit is not None and limit < len(texts):
        # Both sets alike: every (len/limit)-th query.
        picks = np.linspace(0, len(texts) - 1, limit).round().astype(int)
        return [texts[i] for i in picks], vectors[picks]
    return texts, vectors


# ---- the database ---------------------------------------------------------------------------------

def database_url(server_url: str) -> str:
    base, _, query = server_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{DATABASE}" + (f"?{query}" if query else "")


def server_url() -> str:
    from semindex import settings
    from semindex.database import embedded_database_url

    return settings.external_database_url() or embedded_database_url(settings.semindex_home())


def drop_database(server: str) -> None:
    import psycopg

    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def load(db, texts: list[str], vectors: np.ndarray, rng: np.random.Generator) -> dict:
    """Records, chunks and both versions' rows; returns chunk ids and sources by matrix row."""
    from semindex import lifecycle, retained_size
    from semindex.ann_substrate.capture import ensure_change_capture
    from semindex.encoders import MINILM_ENCODER_NAME
    from semindex.vectors.storage import storage_for

    versions = {
        "zvec": lifecycle.register_version(db, ZVEC_KEY, MINILM_ENCODER_NAME, 384, ann_engine="zvec"),
        "pgvector": lifecycle.register_version(db, PG_KEY, MINILM_ENCODER_NAME, 384, ann_engine="pgvector"),
    }
    storage = storage_for(db)
    for version in versions.values():
        storage.create_table(db, version)
    # Before any row: the zvec version's change capture (the same triggers create_table adds for it).
    capture = ensure_change_capture(db, versions["zvec"])
    rows = len(texts)
    order = rng.permutation(rows)
    sizes, start = {}, 0
    for source, share in SOURCES:
        size = rows - start if share is None else int(round(share * rows))
        sizes[source] = order[start:start + size]
        start += size
    chunk_ids = np.zeros(rows, dtype=np.int64)
    source_of = np.zeros(rows, dtype=np.int8)
    with db.connection() as conn:
        for number, (source, picked) in enumerate(sizes.items()):
            picked = np.sort(picked)
            with conn.cursor().copy(
                "COPY semindex.raw_records (connector_id, connector_instance_id, stream, record_key, fields, "
                "updated_at, content_sha256, chunked_sha256) FROM STDIN"
            ) as copy:
                for row in picked:
                    key = f"m{row:07d}"
                    sha = hashlib.sha256(f"{source}/{key}".encode()).digest()
                    copy.write_row(("chitchat", source, STREAM, key, json.dumps({"text": texts[row]}),
                                    "2024-01-01T00:00:00Z", sha, sha))
            made = conn.execute(
                "INSERT INTO semindex.chunks (record_id, connector_id, connector_instance_id, stream, record_key, "
                "field, chunk_no, content, content_sha256, semantic_key) "
                "SELECT record_id, connector_id, connector_instance_id, stream, record_key, 'text', 0, fields->>'text', "
                "sha256(convert_to(fields->>'text', 'UTF8')), content_sha256 FROM semindex.raw_records "
                "WHERE connector_instance_id = %s ORDER BY record_key RETURNING chunk_id, record_key, content_sha256",
                (source,),
            ).fetchall()
            by_key = {key: (chunk_id, sha) for chunk_id, key, sha in made}
            version_rows = []
            for row in picked:
                key = f"m{row:07d}"
                chunk_id, sha = by_key[key]
                chunk_ids[row], source_of[row] = chunk_id, number
                version_rows.append((chunk_id, source, STREAM, key, "text", sha, vectors[row]))
            for version in versions.values():
                storage.copy_version_rows(conn, version, version_rows)
            conn.execute("INSERT INTO semindex.retained_size_projection (connector_instance_id, stream) "
                         "VALUES (%s, %s) ON CONFLICT DO NOTHING", (source, STREAM))
            conn.commit()
            log(f"  {source}: {len(picked):,} rows")
        conn.execute("UPDATE semindex.embedding_backfill SET watermark = (SELECT max(chunk_id) FROM semindex.chunks)")
    retained_size.refresh_projection(db)
    with db.autocommit_connection() as conn:
        conn.execute("VACUUM ANALYZE")
    return {"versions": versions, "chunk_ids": chunk_ids, "source_of": source_of,
            "sizes": {source: len(picked) for source, picked in sizes.items()}, "capture": capture}


# ---- CPU of this database's backends --------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def backend_cpu(conn) -> float:
    """utime + stime (seconds) of every backend connected to this database, from /proc."""
    total = 0.0
    for (pid,) in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()").fetchall():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


# ---- the methods, in any process ------------------------------------------------------------------

class Methods:
    """Per process: the handles and connections each method needs, and a runner per cell."""

    def __init__(self, config: dict) -> None:
        from semindex.database import open_database
        from semindex.vectors.version import get_version

        self.config = config
        self.url = config["url"]
        self.db = open_database(self.url, bootstrap=False)
        self.versions = {"zvec": get_version(self.db, ZVEC_KEY), "pgvector": get_version(self.db, PG_KEY)}
        self.queries = np.asarray(config["queries"], dtype=np.float32)
        self._collection = None
        self._collection_path = None
        self._sql = None
        with self.db.connection() as conn:
            self.source_ids = {instance: n for instance, stream, n in conn.execute(
                "SELECT connector_instance_id, stream, source_id FROM semindex.ann_sources").fetchall()}

    def collection(self):
        """A read-only handle on the zvec version's published generation (reopened when it changes)."""
        from semindex.ann_substrate.generations import generation_path, published, require_zvec

        zvec = require_zvec()
        path = str(generation_path(self.versions["zvec"], published(self.db, self.versions["zvec"]).generation))
        if self._collection_path != path:
            if self._collection is not None:
                self._collection.close()
            self._collection = zvec.open(path, zvec.CollectionOption(read_only=True))
            self._collection_path = path
        return self._collection

    def close(self) -> None:
        if self._collection is not None:
            self._collection.close()
            self._collection = self._collection_path = None
        if self._sql is not None:
            self._sql.close()
            self._sql = None

    def sql(self):
        if self._sql is None:
            import psycopg
            from pgvector.psycopg import register_vector

            self._sql = psycopg.connect(self.url, autocommit=True, prepare_threshold=None)
            register_vector(self._sql)
        return self._sql

    def runner(self, method: str, ef: int, scope: str | None):
        """A function query vector -> (chunk ids, plan labels or None) for one cell."""
        if method == "zvec":
            from semindex.ann_substrate.generations import VECTOR_FIELD, require_zvec

            zvec = require_zvec()
            collection = self.collection()
            where = None if scope is None else f"source_id IN ({int(self.source_ids[SCOPES[scope]])})"
            param = zvec.HnswQueryParam(ef=ef)

            def run(vector):
                internal = collection.query_internal_ids(zvec.Query(VECTOR_FIELD, vector=vector, param=param),
                                                         topk=K, filter=where)
                return [int(key) for key in collection.resolve_internal_ids(internal) if key is not None], None
            return run
        if method in ITERATIVE:
            conn = self.sql()
            conn.execute("SELECT set_config('hnsw.ef_search', %s, false), set_config('hnsw.iterative_scan', %s, false)",
                         (str(ef), ITERATIVE[method]))
            table = self.versions["pgvector"].vectors_table
            if scope is None:
                statement = f"SELECT chunk_id FROM {table} ORDER BY embedding <=> %(q)s LIMIT {K}"
            elif ITERATIVE[method] == "relaxed_order":
                statement = (f"WITH relaxed AS MATERIALIZED (SELECT chunk_id, embedding <=> %(q)s AS distance FROM {table} "
                             f"WHERE connector_instance_id = %(s)s ORDER BY distance LIMIT {K}) "
                             "SELECT chunk_id FROM relaxed ORDER BY distance")
            else:
                statement = (f"SELECT chunk_id FROM {table} WHERE connector_instance_id = %(s)s "
                             f"ORDER BY embedding <=> %(q)s LIMIT {K}")
            source = None if scope is None else SCOPES[scope]

            def run(vector):
                return [row[0] for row in conn.execute(statement, {"q": vector, "s": source})], None
            return run
        from semindex.search import PlannerSettings, Scope, Searcher, SearchRequest

        engine = "zvec" if method in ("zvec_plan", "planner_zvec") else "pgvector"
        if method.startswith("planner_"):
            planner = PlannerSettings()  # semindex's own planner, default settings
        elif scope is None:
            planner = PlannerSettings(candidate_window=ef, graph_window=ef)
        else:  # the plan itself at every scope, not the exact scan the planner prefers for small sources
            planner = PlannerSettings(candidate_window=ef, graph_window=ef, exact_threshold=0, min_ann_share=0)
        searcher = Searcher(self.db, planner=planner)
        request = SearchRequest("bench", mode="semantic", k=K, unit="chunks", version_key=self.versions[engine].version_key,
                                scope=Scope() if scope is None else Scope(connector_instance_ids=(SCOPES[scope],)))

        def run(vector):
            response = searcher.search(request, vector=vector)
            return [hit.chunk_id for hit in response.hits], "|".join(sorted(set(response.meta.semantic_plans.values())))
        return run


_WORKER: Methods | None = None


def _worker_init(config: dict) -> None:
    global _WORKER
    _WORKER = Methods(config)


def _load_task(task: dict) -> dict:
    """One client of a timed load cell: warm up, wait for the common start, loop until the end."""
    methods = _WORKER
    run = methods.runner(task["method"], task["ef"], task["scope"])
    queries = methods.queries
    for i in range(WARMUP):
        run(queries[(task["offset"] + i) % len(queries)])
    delay = task["start_at"] - time.time()
    if delay > 0:
        time.sleep(delay)
    latencies = []
    i = task["offset"]
    cpu = time.process_time()
    began = time.perf_counter()
    end = began + task["seconds"]
    while True:
        t0 = time.perf_counter()
        run(queries[i % len(queries)])
        t1 = time.perf_counter()
        latencies.append(1000 * (t1 - t0))
        i += 1
        if t1 >= end:
            break
    return {"pid": os.getpid(), "count": len(latencies), "seconds": t1 - began, "cpu_s": time.process_time() - cpu,
            "latencies_ms": latencies, "late_s": round(max(0.0, -delay), 3)}


def _ping(_: int) -> int:
    time.sleep(1.0)
    return os.getpid()


# ---- measuring ------------------------------------------------------------------------------------

def pct(values, q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if len(values) else float("nan")


class Truth:
    """Exact distances over the same float32 vectors (in float64) and the k-th distance per query
    and scope."""

    def __init__(self, vectors: np.ndarray, queries: np.ndarray, chunk_ids: np.ndarray, source_of: np.ndarray) -> None:
        self.matrix = vectors.astype(np.float64)
        self.queries = queries.astype(np.float64)
        self.row_of = np.full(int(chunk_ids.max()) + 1, -1, dtype=np.int64)
        self.row_of[chunk_ids] = np.arange(len(chunk_ids))
        self.source_of = source_of
        self.kth: dict[str | None, np.ndarray] = {}
        numbers = {source: n for n, (source, _) in enumerate(SOURCES)}
        for scope in (None, *SCOPES):
            mask = np.ones(len(vectors), dtype=bool) if scope is None else source_of == numbers[SCOPES[scope]]
            scoped = self.matrix[mask]
            kth = np.empty(len(queries))
            for start in range(0, len(queries), 64):
                distances = 1.0 - self.queries[start:start + 64] @ scoped.T
                kth[start:start + 64] = np.partition(distances, K - 1, axis=1)[:, K - 1]
            self.kth[scope] = kth
        self.scope_number = {scope: numbers[source] for scope, source in SCOPES.items()}

    def judge(self, query: int, ids: list[int], scope: str | None) -> tuple[float, bool, int]:
        """(recall@10, short, hits outside the scope)."""
        rows = self.row_of[np.asarray([i for i in ids if 0 <= i < len(self.row_of)], dtype=np.int64)]
        rows = rows[rows >= 0]
        distances = 1.0 - self.matrix[rows] @ self.queries[query]
        inside = np.ones(len(rows), dtype=bool) if scope is None else self.source_of[rows] == self.scope_number[scope]
        correct = int(np.sum((distances <= self.kth[scope][query] + 1e-6) & inside))
        return min(correct, K) / K, len(ids) < K, int(np.sum(~inside))


def sweep_cell(methods: Methods, truth: Truth, monitor, method: str, ef: int, scope: str | None) -> dict:
    """Every query once, sequentially, after a warm-up: recall, short answers, latency."""
    run = methods.runner(method, ef, scope)
    queries = methods.queries
    for i in range(min(WARMUP, len(queries))):
        run(queries[i])
    latencies, recalls, shorts, outside, labels = [], [], 0, 0, set()
    server = backend_cpu(monitor)
    cpu = time.process_time()
    for number, vector in enumerate(queries):
        t0 = time.perf_counter()
        ids, label = run(vector)
        latencies.append(1000 * (time.perf_counter() - t0))
        recall, short, out = truth.judge(number, ids, scope)
        recalls.append(recall)
        shorts += short
        outside += out
        if label is not None:
            labels.add(label)
    client_cpu = time.process_time() - cpu
    server_cpu = backend_cpu(monitor) - server
    cell = {"method": method, "ef": ef, "scope": scope or "100%", "queries": len(queries),
            "recall@10": round(statistics.mean(recalls), 4), "short_share": round(shorts / len(queries), 4),
            "outside_hits": outside, "p50_ms": pct(latencies, 50), "p95_ms": pct(latencies, 95),
            "qps_sequential": round(len(latencies) / (sum(latencies) / 1000), 1),
            "cpu_ms_per_query": round(1000 * (client_cpu + server_cpu) / len(queries), 3)}
    if labels:
        cell["plans"] = sorted(labels)
    return cell


def first_reaching(cells: list[dict], target: float) -> dict | None:
    return next((cell for cell in sorted(cells, key=lambda c: c["ef"]) if cell["recall@10"] >= target), None)


def load_cell(pool, monitor, method: str, ef: int, clients: int, seconds: float) -> dict:
    start_at = time.time() + 3.0
    futures = [pool.submit(_load_task, {"method": method, "ef": ef, "scope": None, "start_at": start_at,
                                        "seconds": seconds, "offset": 97 * n}) for n in range(clients)]
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    server = backend_cpu(monitor)
    results = [future.result() for future in futures]
    server_cpu = backend_cpu(monitor) - server
    count = sum(r["count"] for r in results)
    latencies = [value for r in results for value in r["latencies_ms"]]
    client_cpu = sum(r["cpu_s"] for r in results)
    return {"qps": round(sum(r["count"] / r["seconds"] for r in results), 1), "p50_ms": pct(latencies, 50),
            "p95_ms": pct(latencies, 95), "client_cpu_ms_per_query": round(1000 * client_cpu / count, 3),
            "server_cpu_ms_per_query": round(1000 * server_cpu / count, 3),
            "cpu_ms_per_query": round(1000 * (client_cpu + server_cpu) / count, 3), "queries": count,
            "distinct_processes": len({r["pid"] for r in results}), "late_start_s": max(r["late_s"] for r in results)}


def median_cells(cells: list[dict]) -> dict:
    keys = ("qps", "p50_ms", "p95_ms", "cpu_ms_per_query", "client_cpu_ms_per_query", "server_cpu_ms_per_query")
    merged = {key: round(statistics.median(cell[key] for cell in cells), 3) for key in keys}
    merged["qps_runs"] = [cell["qps"] for cell in cells]
    merged["distinct_processes"] = min(cell["distinct_processes"] for cell in cells)
    return merged


def ratio(a, b) -> float | None:
    return round(a / b, 2) if a and b else None


# ---- sync costs -----------------------------------------------------------------------------------

def table_rows(db, version, chunk_ids: list[int]) -> list[tuple]:
    with db.connection() as conn:
        rows = conn.execute(f"SELECT chunk_id, connector_instance_id, stream, record_key, field, content_sha256, embedding "
                            f"FROM {version.vectors_table} WHERE chunk_id = ANY(%s) ORDER BY chunk_id", (chunk_ids,)).fetchall()
    return [(*row[:6], np.asarray(row[6].to_numpy() if hasattr(row[6], "to_numpy") else row[6], dtype=np.float32))
            for row in rows]


def max_delta() -> int:
    """The zvec engine's limit on pending changes (over it, the plan steps aside)."""
    from semindex.search.engines import ZVEC

    return int(getattr(sys.modules[type(ZVEC).__module__], "MAX_DELTA", 50_000))


def bare_zvec_build(version, vectors: np.ndarray, chunk_ids: np.ndarray, source_of: np.ndarray) -> dict:
    """The same collection built straight from the numpy matrix (no PostgreSQL reads, no verify)."""
    from semindex.ann_substrate import builder
    from semindex.ann_substrate.generations import VECTOR_FIELD, disk_bytes, require_zvec

    zvec = require_zvec()
    folder = Path(tempfile.mkdtemp(prefix="bare-", dir=os.environ["SEMINDEX_ZVEC_HOME"]))
    path = folder / "collection"
    try:
        started = time.perf_counter()
        collection = zvec.create_and_open(str(path), builder.schema(zvec, version, builder.GraphParameters(M, EF_CONSTRUCTION)))
        for start in range(0, len(vectors), builder.BATCH):
            docs = [zvec.Doc(id=str(int(chunk_ids[row])), vectors={VECTOR_FIELD: vectors[row]},
                             fields={"source_id": int(source_of[row]) + 1, "field_id": 1})
                    for row in range(start, min(start + builder.BATCH, len(vectors)))]
            statuses = collection.insert(docs)
            failed = [s for s in (statuses if isinstance(statuses, list) else [statuses]) if not s.ok()]
            if failed:
                raise RuntimeError(f"zvec insert failed: {failed[0]}")
        inserted = time.perf_counter()
        collection.optimize()
        collection.flush()
        collection.close()
        done = time.perf_counter()
        return {"seconds": round(done - started, 2), "insert_seconds": round(inserted - started, 2),
                "optimize_flush_seconds": round(done - inserted, 2), "disk_bytes": disk_bytes(path)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def open_times(path: Path, repeats: int = 20) -> dict:
    from semindex.ann_substrate.generations import require_zvec

    zvec = require_zvec()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        collection = zvec.open(str(path), zvec.CollectionOption(read_only=True))
        times.append(1000 * (time.perf_counter() - t0))
        collection.close()
    return {"first_ms": round(times[0], 2), "median_ms": round(statistics.median(times), 2), "repeats": repeats}


def build_timed(db, version, **kwargs) -> dict:
    from semindex.ann_substrate.builder import build

    t0 = time.perf_counter()
    report = build(db, version, **kwargs)
    return {"generation": report.generation, "full": report.full, "documents": report.documents,
            "upserted": report.upserted, "deleted": report.deleted, "build_seconds": report.build_seconds,
            "wall_seconds": round(time.perf_counter() - t0, 2), "disk_bytes": report.disk_bytes,
            "cleaned": report.cleaned}


def tree() -> str:
    """The commit measured, and how many files the working tree changes."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--short"], cwd=root, capture_output=True, text=True).stdout.splitlines()
    except OSError:
        return "unknown"
    return f"{head} + {len(dirty)} changed files" if dirty else head


# ---- the run --------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=None, help="judged queries to use (default: all 513)")
    parser.add_argument("--seconds", type=float, default=10.0, help="each timed load cell")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of timed load cells (medians)")
    parser.add_argument("--changes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--pending", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    parser.add_argument("--quick", action="store_true", help="20,000 rows, 100 queries, 3 s cells, 1 repeat")
    parser.add_argument("--keep", action="store_true", help="keep the database and generations")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.queries, args.seconds, args.repeats = 20_000, args.queries or 100, 3.0, 1
        args.changes, args.pending = [1_000, 5_000, 20_000], [1_000, 5_000, 10_000]
    args.changes = [n for n in args.changes if n <= args.rows]
    args.pending = [n for n in args.pending if n <= args.rows]

    import psycopg
    from semindex import indexes
    from semindex.ann_substrate.generations import generation_path, published, require_zvec
    from semindex.ann_substrate.recall import substrate_recall
    from semindex.database import open_database

    zvec = require_zvec()
    summary: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": args.rows, "k": K, "tree": tree(),
                     "graph": {"m": M, "ef_construction": EF_CONSTRUCTION}, "cores": os.cpu_count(),
                     "load_average_start": [round(x, 2) for x in os.getloadavg()]}
    log(f"vectors: {args.rows:,} distinct chitchat messages, all-MiniLM-L6-v2 (cache {cache_dir()})")
    texts, vectors = chitchat_vectors(args.rows)
    query_texts, queries = judged_queries(args.queries)
    norms = np.linalg.norm(vectors, axis=1)
    summary["vectors"] = {"rows": len(vectors), "queries": len(queries), "norm_min": round(float(norms.min()), 6),
                          "norm_max": round(float(norms.max()), 6)}

    server = server_url()
    url = database_url(server)
    drop_database(server)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    shutil.rmtree(os.environ["SEMINDEX_ZVEC_HOME"], ignore_errors=True)
    Path(os.environ["SEMINDEX_ZVEC_HOME"]).mkdir(parents=True)
    db = open_database(url)
    summary["versions_installed"] = {"postgresql": db.server_version if hasattr(db, "server_version") else None,
                                     "pgvector": db.vector_version, "zvec": getattr(zvec, "__version__", None)}
    with db.connection() as conn:
        summary["versions_installed"]["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
        summary["server_settings"] = {name: conn.execute(f"SHOW {name}").fetchone()[0]
                                      for name in ("shared_buffers", "work_mem", "effective_cache_size")}
    pool = None
    try:
        log(f"loading {args.rows:,} records, chunks and both versions' rows into {DATABASE}")
        loaded = load(db, texts, vectors, np.random.default_rng(5))
        versions = loaded["versions"]
        summary["sources"] = loaded["sizes"]

        sync: dict = {}
        log("pgvector: CREATE INDEX hnsw (m 16, ef_construction 64, serial, maintenance_work_mem 1GB)")
        parameters = indexes.HnswParameters(m=M, ef_construction=EF_CONSTRUCTION, maintenance_work_mem="1GB")
        t0 = time.perf_counter()
        built = indexes.build_hnsw(db, versions["pgvector"], parameters)
        pg_seconds = round(time.perf_counter() - t0, 2)
        with db.connection() as conn:
            index_bytes = conn.execute("SELECT pg_relation_size(%s::regclass)", (f"semindex.{versions['pgvector'].hnsw_index_name}",)).fetchone()[0]
            table_bytes = conn.execute(f"SELECT pg_table_size('{versions['pgvector'].vectors_table}')").fetchone()[0]
        sync["pgvector_create_index"] = {"seconds": pg_seconds, "action": built.action, "index_bytes": index_bytes,
                                         "table_bytes": table_bytes}
        log(f"  {pg_seconds} s, index {index_bytes / 2**20:.0f} MiB")
        log("zvec: the builder's full build (reads PostgreSQL, upserts, optimizes, verifies, publishes)")
        sync["zvec_builder_full"] = build_timed(db, versions["zvec"], full=True)
        log(f"  {sync['zvec_builder_full']}")
        log("zvec: a bare build from the numpy matrix")
        sync["zvec_bare_build"] = bare_zvec_build(versions["zvec"], vectors, loaded["chunk_ids"], loaded["source_of"])
        log(f"  {sync['zvec_bare_build']}")
        path = generation_path(versions["zvec"], published(db, versions["zvec"]).generation)
        sync["zvec_open_read_only"] = open_times(path)
        log("substrate_recall (the gate the zvec plan waits for)")
        verdict = substrate_recall(db, versions["zvec"])
        summary["substrate_recall"] = {"passed": verdict.passed, "summary": verdict.summary, "recall": verdict.diagnostics.get("recall")}
        log(f"  {verdict.summary}")

        log("exact reference (numpy, float64 over the float32 vectors)")
        truth = Truth(vectors, queries, loaded["chunk_ids"], loaded["source_of"])
        time.sleep(1.0)  # BLAS threads spin on after a large product

        config = {"url": url, "queries": queries}
        methods = Methods(config)
        monitor = psycopg.connect(url, autocommit=True)

        # 1. Unfiltered sweep
        summary["load_average_sweep"] = [round(x, 2) for x in os.getloadavg()]
        sweep: dict[str, list[dict]] = {}
        for method in UNFILTERED:
            sweep[method] = []
            for ef in EFS[method]:
                cell = sweep_cell(methods, truth, monitor, method, ef, None)
                sweep[method].append(cell)
                log(f"unfiltered {method} ef {ef}: recall {cell['recall@10']} p50 {cell['p50_ms']} ms "
                    f"qps {cell['qps_sequential']} {cell.get('plans', '')}")
                if cell["recall@10"] >= 0.995:
                    break  # past every target: wider walks only cost
        summary["unfiltered_sweep"] = sweep
        chosen = {method: {str(target): (first_reaching(cells, target) or {}).get("ef") for target in TARGETS}
                  for method, cells in sweep.items()}
        summary["ef_at_target"] = chosen

        # Timed load cells: 1 and 2 client processes, methods interleaved, --repeats rounds.
        log(f"timed load cells: {args.seconds} s, 1 and 2 clients, {args.repeats} rounds")
        pool = ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn"), initializer=_worker_init, initargs=(config,))
        pids = {f.result() for f in [pool.submit(_ping, n) for n in range(2)]}
        summary["load_processes"] = len(pids)
        cells_to_run = sorted({(method, ef) for method, by_target in chosen.items() for ef in by_target.values() if ef})
        runs: dict[tuple, list[dict]] = {}
        summary["load_average_load_cells"] = [round(x, 2) for x in os.getloadavg()]
        for repeat in range(args.repeats):
            for clients in (1, 2):
                for method, ef in cells_to_run:
                    cell = load_cell(pool, monitor, method, ef, clients, args.seconds)
                    runs.setdefault((method, ef, clients), []).append(cell)
                    log(f"round {repeat + 1} {clients} client(s) {method} ef {ef}: {cell['qps']} qps, p50 {cell['p50_ms']} ms, "
                        f"p95 {cell['p95_ms']} ms, cpu {cell['cpu_ms_per_query']} ms/q")
        load_table: dict = {}
        for method, by_target in chosen.items():
            for target, ef in by_target.items():
                if not ef:
                    continue
                recall = next(c["recall@10"] for c in sweep[method] if c["ef"] == ef)
                for clients in (1, 2):
                    load_table.setdefault(method, {}).setdefault(target, {})[str(clients)] = {
                        "ef": ef, "recall@10": recall, **median_cells(runs[(method, ef, clients)])}
        summary["unfiltered_load"] = load_table

        def qps(method, target, clients):
            return load_table.get(method, {}).get(str(target), {}).get(str(clients), {}).get("qps")

        ratios = {}
        for target in TARGETS:
            for clients in (1, 2):
                ratios[f"zvec_over_pgvector_sql@{target}/{clients}c"] = ratio(qps("zvec", target, clients), qps("pgvector_sql", target, clients))
                ratios[f"zvec_plan_over_pgvector_plan@{target}/{clients}c"] = ratio(qps("zvec_plan", target, clients), qps("pgvector_plan", target, clients))
        summary["ratios"] = ratios
        pool.shutdown()
        pool = None

        # 2. Scoped
        summary["load_average_scoped"] = [round(x, 2) for x in os.getloadavg()]
        scoped: dict = {}
        for scope in SCOPES:
            scoped[scope] = {}
            for method in SCOPED:
                cells = []
                for ef in (SCOPED_ZVEC_EFS if method.startswith("zvec") else SCOPED_EFS):
                    cell = sweep_cell(methods, truth, monitor, method, ef, scope)
                    cells.append(cell)
                    log(f"{scope} {method} ef {ef}: recall {cell['recall@10']} short {cell['short_share']} "
                        f"p95 {cell['p95_ms']} ms qps {cell['qps_sequential']} {cell.get('plans', '')}")
                    if cell["recall@10"] >= 0.999 and cell["short_share"] == 0 and method != "zvec_plan":
                        break  # the zvec plan runs every ef: its target is judged at the default window
                scoped[scope][method] = cells
            for method in PLANNER_CELLS:
                cell = sweep_cell(methods, truth, monitor, method, 200, scope)
                scoped[scope][method] = [cell]
                log(f"{scope} {method} (default planner): recall {cell['recall@10']} short {cell['short_share']} "
                    f"p95 {cell['p95_ms']} ms qps {cell['qps_sequential']} {cell.get('plans', '')}")
        summary["scoped"] = scoped

        # 3. Sync costs: the delta scan, then builds of 1k/10k/100k changes
        summary["load_average_sync"] = [round(x, 2) for x in os.getloadavg()]
        zversion = versions["zvec"]
        delta_ef = chosen["zvec_plan"]["0.95"] or 200
        reference_ef = chosen["pgvector_plan"]["0.95"] or 200
        rng = np.random.default_rng(11)
        shuffled = rng.permutation(loaded["chunk_ids"]).tolist()
        # The engine's limit and one change past it (the plan steps aside to the pgvector plan on
        # the zvec version's table): that table gets its HNSW index for this phase, as the pipeline
        # builds one for every version, and loses it after (the builds below re-insert rows).
        steps = sorted({0, *args.pending, *(n for n in (max_delta(), max_delta() + 1) if n <= args.rows)})
        sync["delta_hnsw_on_zvec_table_seconds"] = round(indexes.build_hnsw(db, zversion, parameters).seconds, 2)
        delta, updated = [], 0
        for pending in steps:
            if pending > updated:
                with db.connection() as conn:
                    conn.execute(f"UPDATE {zversion.vectors_table} SET embedding = embedding WHERE chunk_id = ANY(%s)",
                                 (shuffled[updated:pending],))
                updated = pending
                time.sleep(2.1)  # the engine's handle TTL: it re-reads the published generation
            cell = sweep_cell(methods, truth, monitor, "zvec_plan", delta_ef, None)
            reference = sweep_cell(methods, truth, monitor, "pgvector_plan", reference_ef, None)
            delta.append({"pending": pending, **cell, "pgvector_plan_p50_ms": reference["p50_ms"],
                          "pgvector_plan_p95_ms": reference["p95_ms"], "pgvector_plan_ef": reference_ef})
            log(f"delta scan, {pending:,} pending: zvec plan p50 {cell['p50_ms']} ms p95 {cell['p95_ms']} ms "
                f"recall {cell['recall@10']} {cell.get('plans')}; pgvector plan p50 {reference['p50_ms']} ms")
        sync["delta_scan"] = delta
        sync["max_delta"] = max_delta()
        indexes.drop_index(db, zversion.hnsw_index_name, concurrently=False)
        methods.close()
        builds = {}
        if args.pending:
            builds[f"updated_{updated}"] = build_timed(db, zversion)
            log(f"build after {updated:,} updated rows: {builds[f'updated_{updated}']}")
        for changes in args.changes:
            victims = shuffled[:changes]
            saved = table_rows(db, zversion, victims)
            with db.connection() as conn:
                conn.execute(f"DELETE FROM {zversion.vectors_table} WHERE chunk_id = ANY(%s)", (victims,))
            builds[f"deleted_{changes}"] = build_timed(db, zversion)
            log(f"build after {changes:,} deleted rows: {builds[f'deleted_{changes}']}")
            from semindex.vectors.storage import storage_for

            with db.connection() as conn:
                storage_for(db).copy_version_rows(conn, zversion, saved)
            builds[f"inserted_{changes}"] = build_timed(db, zversion)
            log(f"build after {changes:,} inserted rows: {builds[f'inserted_{changes}']}")
        sync["incremental_builds"] = builds
        path = generation_path(zversion, published(db, zversion).generation)
        sync["zvec_open_read_only_end"] = open_times(path)
        summary["sync"] = sync
        monitor.close()
    except Exception:  # what was measured so far is still printed, with the error
        import traceback

        summary["error"] = traceback.format_exc()
        summary.setdefault("sync", sync if "sync" in locals() else {})
        log(summary["error"])
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        summary["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        if not args.keep:
            from semindex import database as database_module

            opened = database_module._open_databases.pop(url, None)
            if opened is not None:
                opened.close()
            drop_database(server)
            shutil.rmtree(os.environ["SEMINDEX_ZVEC_HOME"], ignore_errors=True)
    summary["targets"] = targets(summary)
    details = cache_dir() / f"results-{time.strftime('%Y%m%dT%H%M%S')}.json"
    details.write_text(json.dumps(summary, indent=1, default=str))
    print_tables(summary)
    print(f"\nevery cell: {details}")
    print(layered_json(compact(summary)))


def targets(summary: dict) -> dict:
    ratios = summary.get("ratios", {})
    engine = [ratios.get(f"zvec_over_pgvector_sql@0.95/{c}c") for c in (1, 2)]
    plans = [ratios.get(f"zvec_plan_over_pgvector_plan@0.95/{c}c") for c in (1, 2)]
    from semindex.search import PlannerSettings

    window = PlannerSettings().graph_window  # what the zvec plan walks with unless configured
    scopes = {}
    for scope, by_method in summary.get("scoped", {}).items():
        cells = by_method.get("zvec_plan", [])
        at_default = next((c for c in cells if c["ef"] == window), None)
        best = first_reaching([c for c in cells if c["short_share"] == 0], 0.99)
        scopes[scope] = {"default_window": window, "smallest_ef_reaching": best["ef"] if best else None,
                         "at_default_window": None if at_default is None else {k: at_default[k] for k in ("recall@10", "short_share")},
                         "met": at_default is not None and at_default["recall@10"] >= 0.99 and at_default["short_share"] == 0}
    return {
        "zvec_3x_pgvector_engine@0.95": {"ratios_1c_2c": engine, "met": all(r is not None and r >= 3 for r in engine)},
        "zvec_plan_1.5x_pgvector_plan@0.95": {"ratios_1c_2c": plans, "met": all(r is not None and r >= 1.5 for r in plans)},
        "zvec_plan_recall_0.99_no_short_every_scope": {
            "by_scope": scopes, "met": bool(scopes) and all(s["met"] for s in scopes.values())},
    }


def layered_json(value, depth: int = 0, levels: int = 3) -> str:
    """JSON with the first `levels` levels of objects one key a line, anything deeper on one line."""
    if not isinstance(value, dict) or depth >= levels or not value:
        return json.dumps(value, default=str)
    pad = " " * (depth + 1)
    items = [f"{pad}{json.dumps(key)}: {layered_json(item, depth + 1, levels)}" for key, item in value.items()]
    return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"


def best_cell(cells: list[dict]) -> dict:
    """The smallest ef reaching recall 0.99 with no short answer, else the best recall seen."""
    cell = first_reaching([c for c in cells if c["short_share"] == 0], 0.99) or max(cells, key=lambda c: (c["recall@10"], -c["ef"]))
    return {key: cell[key] for key in ("ef", "recall@10", "short_share", "outside_hits", "p50_ms", "p95_ms", "qps_sequential", "plans") if key in cell}


def compact(summary: dict) -> dict:
    """The summary printed as JSON: everything but the sweeps' cells (in the tables and the file)."""
    short = {key: value for key, value in summary.items() if key not in ("unfiltered_sweep", "scoped", "sync")}
    short["scoped_best"] = {scope: {method: best_cell(cells) for method, cells in by_method.items()}
                            for scope, by_method in summary.get("scoped", {}).items()}
    sync = dict(summary.get("sync", {}))
    sync["delta_scan"] = [{key: d[key] for key in ("pending", "p50_ms", "p95_ms", "qps_sequential", "recall@10", "plans",
                                                  "pgvector_plan_p50_ms", "pgvector_plan_p95_ms") if key in d}
                          for d in sync.get("delta_scan", [])]
    short["sync"] = sync
    return short


def print_tables(summary: dict) -> None:
    print("\nunfiltered sweep: method | ef | recall@10 | p50 ms | p95 ms | seq qps | cpu ms/q")
    for method, cells in summary.get("unfiltered_sweep", {}).items():
        for c in cells:
            print(f"{method:>14} | {c['ef']:>4} | {c['recall@10']:.4f} | {c['p50_ms']:>8} | {c['p95_ms']:>8} | "
                  f"{c['qps_sequential']:>8} | {c['cpu_ms_per_query']:>7}")
    print("\nunfiltered load (medians): method | target | ef | recall | clients | qps | p50 ms | p95 ms | cpu ms/q (client+server)")
    for method, by_target in summary.get("unfiltered_load", {}).items():
        for target, by_clients in by_target.items():
            for clients, c in by_clients.items():
                print(f"{method:>14} | {target} | {c['ef']:>4} | {c['recall@10']:.4f} | {clients} | {c['qps']:>8} | "
                      f"{c['p50_ms']:>7} | {c['p95_ms']:>7} | {c['cpu_ms_per_query']} ({c['client_cpu_ms_per_query']}+{c['server_cpu_ms_per_query']})")
    print("\nratios (QPS):")
    for name, value in summary.get("ratios", {}).items():
        print(f"  {name}: {value}")
    print("\nscoped: scope | method | ef | recall@10 | short | outside | p50 ms | p95 ms | seq qps | plans")
    for scope, by_method in summary.get("scoped", {}).items():
        for method, cells in by_method.items():
            for c in cells:
                print(f"{scope:>4} | {method:>20} | {c['ef']:>4} | {c['recall@10']:.4f} | {c['short_share']:.3f} | "
                      f"{c['outside_hits']} | {c['p50_ms']:>8} | {c['p95_ms']:>8} | {c['qps_sequential']:>7} | {','.join(c.get('plans', []))}")
    sync = summary.get("sync", {})
    if sync:
        print("\nsync costs:")
        pg, full, bare = sync.get("pgvector_create_index", {}), sync.get("zvec_builder_full", {}), sync.get("zvec_bare_build", {})
        print(f"  full build: zvec builder {full.get('build_seconds')} s (disk {full.get('disk_bytes', 0) / 2**20:.0f} MiB), "
              f"bare zvec {bare.get('seconds')} s (insert {bare.get('insert_seconds')} + optimize {bare.get('optimize_flush_seconds')}), "
              f"pgvector CREATE INDEX {pg.get('seconds')} s (index {pg.get('index_bytes', 0) / 2**20:.0f} MiB)")
        print(f"  read-only open: {sync.get('zvec_open_read_only')} ; at the end {sync.get('zvec_open_read_only_end')}")
        print("  delta scan (unfiltered): pending | zvec plan p50 ms | p95 ms | recall | plans | pgvector plan p50 ms (same moment)")
        for d in sync.get("delta_scan", []):
            print(f"    {d['pending']:>6} | {d['p50_ms']:>7} | {d['p95_ms']:>7} | {d['recall@10']} | {','.join(d.get('plans', []))} | "
                  f"{d.get('pgvector_plan_p50_ms')}")
        print("  incremental builds: changes | builder s | wall s | upserted | deleted | disk MiB")
        for name, b in sync.get("incremental_builds", {}).items():
            print(f"    {name:>15} | {b['build_seconds']:>7} | {b['wall_seconds']:>7} | {b['upserted']} | {b['deleted']} | "
                  f"{b['disk_bytes'] / 2**20:.0f}")
    print("\ntargets:")
    for name, verdict in summary.get("targets", {}).items():
        print(f"  {name}: {'MET' if verdict['met'] else 'NOT MET'} {json.dumps({k: v for k, v in verdict.items() if k != 'met'})}")


if __name__ == "__main__":
    main()
