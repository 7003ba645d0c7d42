"""HTTP latency, throughput and errors of `semindex serve` at 1,000,000 chunks, next to the same searches
called in-process through the library, in one run.

    python bench/http_latency.py [--seconds 60] [--workers 1 2] [--clients 1 8 32]
                                 [--routes lexical semantic hybrid] [--quick]

Data: the database of bench/search_latency.py (semindex_bench_real, 1,000,000 rows of real text over
24 sources; run that benchmark once first to build it). This one bootstraps it (idempotent: the
token table), writes its lexical documents once when it has none (that build writes chunks only),
creates an owner token (revoked at the end) and starts the real service as a subprocess on
127.0.0.1 (`semindex serve --workers N`), waiting for /readyz. Queries are 30 real messages (the
ones search_latency.py uses) with limit=10; a third go unscoped, half name one connection (sources
of about 0.1%, 1% and 10% of the rows) and a sixth the one stream.

Per worker count, route and number of concurrent clients (an asyncio httpx client, each client looping
over the query list for --seconds, keep-alive, after one untimed warm-up pass) it prints p50/p95/p99,
requests/s, the error rate (non-200 answers and exceptions) and the server's own p50 (from its
request log). Baseline: the route's work (compatible.Searches.first_page) called in-process,
sequentially, for --seconds; the HTTP overhead ratio is HTTP p50 at 1 client over in-process p50
(target <= 1.2), both over whole passes of the queries, and the median of the per-query ratios.
After each service run, the RSS of the service's process tree (MiB). The client shares the
machine's cores with the service: at 8 and 32 clients throughput is the pair's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_database import database_on, log, percentile, scopes_by_share  # noqa: E402

from semindex.access import create_token, revoke_token  # noqa: E402
from semindex.builders.sample_corpus import iter_chitchat_messages  # noqa: E402
from semindex.chunks import backfill_lexical_documents  # noqa: E402
from semindex.database import Database, resolve_database_url  # noqa: E402
from semindex.search import Scope, Searcher, SearchRequest  # noqa: E402
from semindex.search.ranking import RANKING_DEPTH  # noqa: E402
from semindex.vectors.version import active_version  # noqa: E402

DATABASE = "semindex_bench_real"  # bench/search_latency.py builds it
BASE_TEXTS = 20_000  # search_latency.py's queries are the messages after its 20,000 base texts
LIMIT = 10
ROUTES = {"lexical": "/v1/search", "semantic": "/v1/search/semantic", "hybrid": "/v1/search/hybrid"}
ROOT = Path(__file__).resolve().parent.parent
_LOG_LINE = re.compile(r" (GET|POST) (\S+) (\d{3}) ([\d.]+)ms$")


def database_url(server_url: str) -> str:
    return database_on(server_url, DATABASE)


def latency_figures(latencies_ms: list[float]) -> dict:
    return {"p50_ms": round(percentile(latencies_ms, 50), 2), "p95_ms": round(percentile(latencies_ms, 95), 2),
            "p99_ms": round(percentile(latencies_ms, 99), 2)}


def ensure_lexical_documents(db: Database) -> None:
    """search_latency.py's build writes chunks but no lexical documents (what BM25 ranks): without
    them every lexical search matches nothing. Written once with the library's backfill (the path of
    records chunked before lexical documents existed), then analysed."""
    with db.connection() as conn:
        if conn.execute("SELECT EXISTS (SELECT 1 FROM semindex.lexical_documents)").fetchone()[0]:
            return
        conn.execute("UPDATE semindex.lexical_backfill SET watermark = 0, done = false")
    log("writing lexical documents for every record (once; ~minutes)")
    started = time.perf_counter()
    written = backfill_lexical_documents(db, batch_size=20_000)
    with db.autocommit_connection() as conn:
        conn.execute("VACUUM ANALYZE semindex.lexical_documents, semindex.lexical_terms, semindex.lexical_sources")
    log(f"  {written} records in {time.perf_counter() - started:.0f}s")


# --- the queries ------------------------------------------------------------------------------------

def build_queries(db: Database, count: int) -> tuple[list[dict], dict]:
    """`count` real messages, each with its scope: unscoped, one connection, or the `messages` stream."""
    with db.connection() as conn:
        rows = conn.execute("SELECT connector_instance_id, stream, count(*) FROM semindex.chunks GROUP BY 1, 2").fetchall()
    sizes: dict[str, int] = Counter()
    for instance, _stream, n in rows:
        sizes[instance] += n
    streams = sorted({stream for _, stream, _ in rows})
    scopes = scopes_by_share(dict(sizes))
    connections = {share: scopes[share][0] for share in ("0.1%", "1%", "10%")}
    texts = [r["fields"]["text"] for r in iter_chitchat_messages(limit=BASE_TEXTS + 5000)][BASE_TEXTS:]
    texts = [t for t in texts if len(t) > 20][:count]
    # Per six queries: two unscoped, one per connection size, one stream.
    pattern = [None, ("connection", "1%"), ("streams", None), None, ("connection", "10%"), ("connection", "0.1%")]
    queries = []
    for i, text in enumerate(texts):
        kind = pattern[i % len(pattern)]
        query = {"q": text, "connection": None, "streams": ()}
        if kind and kind[0] == "connection":
            query["connection"] = connections[kind[1]]
        elif kind:
            query["streams"] = (streams[0],)
        queries.append(query)
    facts = {"rows": sum(sizes.values()), "sources": len(sizes), "streams": streams,
             "connections": {share: {"connection_id": name, "rows": sizes[name]} for share, name in connections.items()},
             "queries": len(queries), "scoped_by_connection": sum(1 for q in queries if q["connection"]),
             "scoped_by_stream": sum(1 for q in queries if q["streams"])}
    return queries, facts


def http_params(query: dict) -> list[tuple[str, str]]:
    params = [("q", query["q"]), ("limit", str(LIMIT))]
    if query["connection"]:
        params.append(("connection_id", query["connection"]))
    params += [("streams", s) for s in query["streams"]]
    return params


# --- in-process baseline ------------------------------------------------------------------------------

def first_page(searcher: Searcher, route: str, query: dict) -> list:
    """What compatible.Searches.first_page does for an owner token (its scope unchanged)."""
    scope = Scope(connector_instance_ids=(query["connection"],) if query["connection"] else (), streams=query["streams"])
    request = SearchRequest(query["q"], mode=route, k=LIMIT, scope=scope).validated()
    if route == "hybrid":
        return searcher.search(request).hits
    ranking = searcher.ranking(request, RANKING_DEPTH)
    return searcher.page(ranking, 0, LIMIT)


def per_query_p50(timed: list[tuple[int, float]], count: int) -> list[float]:
    by_query: dict[int, list[float]] = {}
    for index, latency in timed:
        by_query.setdefault(index, []).append(latency)
    return [round(percentile(by_query.get(i, []), 50), 2) for i in range(count)]


def in_process(searcher: Searcher, route: str, queries: list[dict], seconds: float) -> tuple[dict, list]:
    """The route's work, sequentially, in whole passes over the queries (at least `seconds`)."""
    first_keys = [[(h.connector_instance_id, h.record_key) for h in first_page(searcher, route, q)] for q in queries]
    timed: list[tuple[int, float]] = []
    started = time.perf_counter()
    i = 0
    while time.perf_counter() < started + seconds or i % len(queries):
        t0 = time.perf_counter()
        first_page(searcher, route, queries[i % len(queries)])
        timed.append((i % len(queries), 1000 * (time.perf_counter() - t0)))
        i += 1
    elapsed = time.perf_counter() - started
    figures = {**latency_figures([t for _, t in timed]), "requests": len(timed), "requests_per_s": round(len(timed) / elapsed, 1),
               "mean_hits": round(sum(map(len, first_keys)) / len(first_keys), 2),
               "per_query_p50_ms": per_query_p50(timed, len(queries))}
    return figures, first_keys


# --- the service ----------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """`semindex serve` as a subprocess on loopback, its stderr kept in a file."""

    def __init__(self, url: str, workers: int, log_dir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"serve-{workers}w.log"
        self._log = open(self.log_path, "w")
        env = {**os.environ, "DATABASE_URL": url}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "semindex_app.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", str(workers)],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self._read_at = 0

    def wait_ready(self, timeout: float = 300.0) -> float:
        started = time.perf_counter()
        with httpx.Client(base_url=self.base, trust_env=False, timeout=5.0) as client:
            while time.perf_counter() - started < timeout:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the service exited ({self.proc.returncode}):\n{self.tail()}")
                try:
                    if client.get("/readyz").status_code == 200:
                        return time.perf_counter() - started
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
        raise RuntimeError(f"the service was not ready in {timeout:.0f}s:\n{self.tail()}")

    def memory(self) -> dict:
        """VmRSS (and VmHWM, each process's peak) summed over the service's process tree, in MiB."""
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        tree, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo += children.get(pid, [])
        rss = hwm = 0
        for pid in tree:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            rss += int(fields.get("VmRSS", "0 kB").split()[0])
            hwm += int(fields.get("VmHWM", "0 kB").split()[0])
        return {"processes": len(tree), "rss_mib": round(rss / 1024, 1), "peak_rss_sum_mib": round(hwm / 1024, 1)}

    def new_log_lines(self) -> list[str]:
        with open(self.log_path, "rb") as f:
            f.seek(self._read_at)
            data = f.read()
        cut = data.rfind(b"\n") + 1
        self._read_at += cut
        return data[:cut].decode("utf-8", errors="replace").splitlines()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def server_side(lines: list[str], path: str) -> dict:
    """The service's own request log for `path`: p50 and status counts, and warnings/errors logged."""
    latencies, statuses, problems = [], Counter(), []
    for line in lines:
        match = _LOG_LINE.search(line)
        if match and match.group(2) == path:
            latencies.append(float(match.group(4)))
            statuses[match.group(3)] += 1
        elif " WARNING " in line or " ERROR " in line or "Traceback" in line:
            problems.append(line)
    return {"server_p50_ms": round(percentile(latencies, 50), 2), "server_statuses": dict(statuses),
            "log_problems": len(problems), "log_problem_samples": problems[:3]}


# --- the load ---------------------------------------------------------------------------------------------

async def load(base: str, token: str, path: str, queries: list[dict], clients: int, seconds: float) -> dict:
    """`clients` concurrent clients, each looping over the queries until `seconds` have passed (one
    client finishes its pass, so its figures cover whole passes as the in-process baseline's do)."""
    timed: list[tuple[int, float]] = []
    statuses: Counter = Counter()
    samples: dict[str, str] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, limits=limits,
                                 timeout=httpx.Timeout(30.0), trust_env=False) as client:
        started = time.perf_counter()
        deadline = started + seconds
        finished = started

        async def worker(index: int) -> None:
            nonlocal finished
            i = index * 7  # clients start at different queries
            while time.perf_counter() < deadline or (clients == 1 and i % len(queries)):
                params = http_params(queries[i % len(queries)])
                query_index = i % len(queries)
                i += 1
                t0 = time.perf_counter()
                try:
                    response = await client.get(path, params=params)
                    status = str(response.status_code)
                    if response.status_code != 200:
                        samples.setdefault(status, response.text[:300])
                except Exception as error:  # noqa: BLE001 - every failure is a figure here
                    status = f"exception:{type(error).__name__}"
                    samples.setdefault(status, str(error)[:300])
                now = time.perf_counter()
                timed.append((query_index, 1000 * (now - t0)))
                statuses[status] += 1
                finished = max(finished, now)

        await asyncio.gather(*(worker(i) for i in range(clients)))
    total = sum(statuses.values())
    errors = total - statuses.get("200", 0)
    figures = {**latency_figures([t for _, t in timed]), "requests": total, "requests_per_s": round(total / (finished - started), 1),
               "error_rate": round(errors / total, 4) if total else None, "statuses": dict(statuses), "error_samples": samples}
    if clients == 1:
        figures["per_query_p50_ms"] = per_query_p50(timed, len(queries))
    return figures


async def first_pages(base: str, token: str, path: str, queries: list[dict], clients: int) -> list:
    """An untimed pass over the queries by each of `clients` concurrent connections (so every worker
    process likely warms its query-vector cache and pools), and each query's hits (the first client's)."""
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, trust_env=False,
                                 timeout=httpx.Timeout(120.0)) as client:
        async def one_pass() -> list:
            keys = []
            for query in queries:
                response = await client.get(path, params=http_params(query))
                ok = response.status_code == 200
                keys.append([(d["connection_id"], d["record_key"]) for d in response.json()["data"]] if ok else None)
            return keys

        return (await asyncio.gather(*(one_pass() for _ in range(clients))))[0]


# --- main ---------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=None, help="per cell and per baseline route (default 60; 5 with --quick)")
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="service worker counts (default 1 2; 1 with --quick)")
    parser.add_argument("--clients", type=int, nargs="+", default=None, help="concurrent clients (default 1 8 32; 1 32 with --quick)")
    parser.add_argument("--routes", nargs="+", choices=list(ROUTES), default=list(ROUTES))
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="a look: 5 s cells, 1 worker, 1 and 32 clients")
    args = parser.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 60.0)
    worker_counts = args.workers or ([1] if args.quick else [1, 2])
    client_counts = args.clients or ([1, 32] if args.quick else [1, 8, 32])

    server_url = resolve_database_url()
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
    if not exists:
        sys.exit(f"no database {DATABASE}: run bench/search_latency.py once first (it builds it)")
    url = database_url(server_url)
    setup = Database(url)  # bootstrap (idempotent): the token table the service reads
    with setup.connection() as conn:
        if conn.execute("SELECT to_regclass('semindex.bench_complete')").fetchone()[0] is None:
            sys.exit(f"{DATABASE} is incomplete: run bench/search_latency.py once (it builds it)")
    version = active_version(setup)
    if version is None:
        sys.exit(f"{DATABASE} has no serving embedding version: run bench/search_latency.py --rebuild")
    ensure_lexical_documents(setup)
    queries, facts = build_queries(setup, args.queries)
    token, token_row = create_token(setup, "bench/http_latency.py")
    log(f"{facts['rows']} chunks, serving {version.version_key}; {facts['queries']} queries "
        f"({facts['scoped_by_connection']} by connection, {facts['scoped_by_stream']} by stream); "
        f"{seconds:.0f}s a cell, workers {worker_counts}, clients {client_counts}, routes {args.routes}")

    db = Database(url, bootstrap=False, max_connections=8)
    searcher = Searcher(db)
    log_dir = Path(tempfile.mkdtemp(prefix="semindex-http-bench-"))
    code = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.split("\n")
    results: dict = {**facts, "code": code, "modified_files": [line[3:] for line in dirty if line.strip()], "seconds": seconds, "limit": LIMIT, "cpus": os.cpu_count(), "service_logs": str(log_dir),
                     "in_process": {}, "runs": {}, "http_overhead_ratio": {},
                     "http_overhead_ratio_per_query_median": {}}
    baseline_keys: dict[str, list] = {}
    try:
        for workers in worker_counts:
            service = Service(url, workers, log_dir)
            run: dict = {"cells": {}}
            results["runs"][str(workers)] = run
            try:
                run["ready_s"] = round(service.wait_ready(), 1)
                log(f"service with {workers} worker(s) ready in {run['ready_s']}s on {service.base}")
                for route in args.routes:
                    path = ROUTES[route]
                    if route not in results["in_process"]:
                        figures, baseline_keys[route] = in_process(searcher, route, queries, seconds)
                        results["in_process"][route] = figures
                        log(f"in-process {route}: {json.dumps({k: v for k, v in figures.items() if k != 'per_query_p50_ms'})}")
                    keys = asyncio.run(first_pages(service.base, token, path, queries, 2 * workers))
                    same = sum(1 for a, b in zip(keys, baseline_keys[route]) if a is not None and a == b)
                    cells = run["cells"][route] = {"same_first_page_as_in_process": f"{same}/{len(queries)}"}
                    service.new_log_lines()
                    for clients in client_counts:
                        cell = asyncio.run(load(service.base, token, path, queries, clients, seconds))
                        cell.update(server_side(service.new_log_lines(), path))
                        cells[str(clients)] = cell
                        shown = {k: v for k, v in cell.items() if k not in ("error_samples", "log_problem_samples", "per_query_p50_ms")}
                        log(f"{workers}w {route} {clients} clients: {json.dumps(shown)}")
                        for status, sample in cell["error_samples"].items():
                            log(f"  {status}: {sample}")
                        for line in cell["log_problem_samples"]:
                            log(f"  service log: {line}")
                    if "1" in cells and route in results["in_process"]:
                        base = results["in_process"][route]
                        ratio = cells["1"]["p50_ms"] / base["p50_ms"]
                        results["http_overhead_ratio"].setdefault(str(workers), {})[route] = round(ratio, 3)
                        per_query = [h / b for h, b in zip(cells["1"]["per_query_p50_ms"], base["per_query_p50_ms"]) if b > 0]
                        results["http_overhead_ratio_per_query_median"].setdefault(str(workers), {})[route] = \
                            round(percentile(per_query, 50), 3)
                run["memory_after_load"] = service.memory()
                log(f"service memory after the load: {json.dumps(run['memory_after_load'])}")
            finally:
                run["exit_code"] = service.stop()
                leftover = [line for line in service.new_log_lines() if " ERROR " in line or "Traceback" in line]
                run["log_errors_at_shutdown"] = leftover[:5]
    finally:
        revoke_token(setup, token_row.token_id)
        db.close()
        setup.close()

    print(json.dumps(results, indent=2))
    print("\nworkers | route    | clients |  p50 ms |  p95 ms |  p99 ms |  req/s | errors | server p50 | HTTP/in-process p50 "
          "(median of per-query ratios)")
    for route in args.routes:
        base = results["in_process"].get(route)
        if base:
            print(f"{'in-proc':>7} | {route:<8} | {1:>7} | {base['p50_ms']:>7} | {base['p95_ms']:>7} | {base['p99_ms']:>7} | "
                  f"{base['requests_per_s']:>6} |      - |          - | (mean hits {base['mean_hits']})")
    for workers, run in results["runs"].items():
        for route, cells in run["cells"].items():
            for clients, cell in cells.items():
                if not clients.isdigit():
                    continue
                ratio = results["http_overhead_ratio"].get(workers, {}).get(route) if clients == "1" else None
                per_query = results["http_overhead_ratio_per_query_median"].get(workers, {}).get(route)
                print(f"{workers:>7} | {route:<8} | {clients:>7} | {cell['p50_ms']:>7} | {cell['p95_ms']:>7} | {cell['p99_ms']:>7} | "
                      f"{cell['requests_per_s']:>6} | {100 * (cell['error_rate'] or 0):>5.1f}% | {cell['server_p50_ms']:>10} | "
                      f"{f'{ratio} ({per_query})' if ratio is not None else ''}")
        memory = run.get("memory_after_load")
        if memory:
            print(f"{workers:>7} worker(s): service RSS after the load {memory['rss_mib']} MiB over {memory['processes']} "
                  f"processes (sum of per-process peaks {memory['peak_rss_sum_mib']} MiB)")


if __name__ == "__main__":
    main()
