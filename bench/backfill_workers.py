"""Backfill throughput with parallel workers, against one worker, on the same texts in the same run.

    python bench/backfill_workers.py [--messages 4000] [--batch-size 256] [--repeats 1]

Real chitchat messages (one chunk each) are ingested once; every configuration backfills a fresh
embedding version (all-MiniLM-L6-v2) of the same chunks:
  * 1x1: one worker process with one torch thread (the baseline);
  * 2x1: two worker processes with one torch thread each, sharing the backfill through the claims;
  * 1x2: one worker process with two torch threads.
Each worker loads and probes the model first, untimed; then all start together and the wall time
runs from that start to the last worker's end. It prints texts encoded per second per configuration
(median over --repeats, configurations interleaved) and the ratios 2x1/1x1, 2x1/1x2 and 1x2/1x1.
It uses the database semindex_bench_backfill_workers on the embedded server (or DATABASE_URL's
server), rebuilt on each run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_database import bench_database, database_on, log  # noqa: E402
from semindex import chunks, lifecycle, raw_records  # noqa: E402
from semindex.builders.sample_corpus import iter_chitchat_messages  # noqa: E402
from semindex.chunking import ChunkingParameters  # noqa: E402
from semindex.database import resolve_database_url  # noqa: E402

DATABASE = "semindex_bench_backfill_workers"
CONFIGURATIONS = {"1x1": (1, 1), "2x1": (2, 1), "1x2": (1, 2)}  # name: (workers, torch threads each)


def worker_main(database_url: str, version_key: str, threads: int, batch_size: int) -> None:
    """One worker process: load the model with `threads` torch threads, say ready, wait for go, backfill."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    from semindex.database import open_database
    from semindex.embeddings import backfill, check_encoder_dimensions
    from semindex.encoders import load_encoder
    from semindex.vectors.version import get_version

    db = open_database(database_url)
    version = get_version(db, version_key)
    encoder = load_encoder(version.encoder_spec)
    check_encoder_dimensions(encoder, version.version_key, version.encoder_name, version.dimensions)
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.time()
    report = backfill(db, version, batch_size=batch_size, encoder=encoder, torch_threads=threads)
    print(json.dumps({"started": started, "ended": time.time(), "encoded_texts": report.encoded_texts,
                      "chunks": report.chunks, "threads": torch.get_num_threads()}), flush=True)


def run_configuration(database_url: str, version_key: str, workers: int, threads: int, batch_size: int) -> dict:
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", database_url, version_key, str(threads), str(batch_size)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for _ in range(workers)
    ]
    for process in processes:
        line = process.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"a worker did not start: {line!r}")
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    reports = []
    for process in processes:
        out, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"a worker failed with exit code {process.returncode}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    wall = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
    encoded = sum(r["encoded_texts"] for r in reports)
    return {"wall_seconds": round(wall, 2), "encoded_texts": encoded, "texts_per_second": round(encoded / wall, 1),
            "per_worker_chunks": [r["chunks"] for r in reports], "threads": [r["threads"] for r in reports]}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    db, _ = bench_database(DATABASE, rebuild=True)
    url = database_on(resolve_database_url(), DATABASE)
    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder) / "chitchat.jsonl"
        with corpus.open("w", encoding="utf-8") as handle:
            for record in iter_chitchat_messages(limit=args.messages, key_prefix="bench:"):
                record["fields"] = {"text": record["fields"]["text"]}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        raw_records.ingest_file(db, corpus)
    chunks.sync_chunks(db, ChunkingParameters())
    with db.connection() as conn:
        chunk_count, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT content_sha256) FROM semindex.chunks").fetchone()
    log(f"{chunk_count} chunks, {distinct} distinct texts; cores: {os.cpu_count()}; load average: {os.getloadavg()}")

    results: dict[str, list[dict]] = {name: [] for name in CONFIGURATIONS}
    for repeat in range(args.repeats):
        for name, (workers, threads) in CONFIGURATIONS.items():
            version = lifecycle.register_version(db, f"bench-{name}-r{repeat}")
            result = run_configuration(url, version.version_key, workers, threads, args.batch_size)
            log(f"{name} (repeat {repeat + 1}): {json.dumps(result)}")
            results[name].append(result)

    rate = {name: statistics.median(r["texts_per_second"] for r in runs) for name, runs in results.items()}
    summary = {
        "messages": args.messages, "distinct_texts": distinct, "batch_size": args.batch_size, "repeats": args.repeats,
        "texts_per_second": rate,
        "ratio_2x1_over_1x1": round(rate["2x1"] / rate["1x1"], 2),
        "ratio_2x1_over_1x2": round(rate["2x1"] / rate["1x2"], 2),
        "ratio_1x2_over_1x1": round(rate["1x2"] / rate["1x1"], 2),
        "load_average_after": os.getloadavg(),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
