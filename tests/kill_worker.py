"""One pipeline run in its own process, so a fault test can SIGKILL it or stop its server part-way.

    python -m tests.kill_worker DATABASE_URL VERSION_KEY --markers PATH [--batch-size N] [--corpus JSONL] [--dagster]

With --corpus the run first ingests and chunks the file; then it backfills the version's vectors
and builds its HNSW index. With --dagster the run is instead the indexing part of the asset graph with its
checks (raw records to the partial index set), materialized in this process on an in-memory Dagster
instance as `semindex run` does; a failed run prints each failed step's error to stderr and exits 1.
The evaluation and promotion assets are left out: their gates judge retrieval quality, which the
tiny hashing encoder of these tests does not have. Before each phase it appends "<phase> <time.monotonic()>" to the
markers file with one unbuffered write, so the test knows where a kill landed even though the
process never gets to say so. SEMINDEX_KILL_WORKER_BATCH_SLEEP (seconds, default 0) slows every
encoded batch down, to spread kill points over the backfill, and SEMINDEX_KILL_WORKER_LINGER (seconds,
default 0) keeps the process alive after "done", so a late kill still kills something; both exist
only in this script.

Without --dagster, Dagster and sentence-transformers are never imported: each worker start must
stay well under a second.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from semindex import chunks, embeddings, indexes, raw_records
from semindex.chunking import ChunkingParameters
from semindex.database import open_database
from semindex.encoders import Encoder, load_encoder
from semindex.vectors.version import get_version

# Heavier than the defaults on purpose: a build of a few hundred rows then lasts about half a
# second, long enough for random kills to land inside it.
HNSW_PARAMETERS = indexes.HnswParameters(m=32, ef_construction=200)
INDEXING_ASSETS = (
    "raw_records", "chunks", "embeddings", "vector_column", "hnsw_index", "lexical_index",
    "retained_size_projection", "partial_index_set",
)
PHASES = ("start", "ingest", "backfill", "index", "dagster", "done")
BATCH_SLEEP_ENV = "SEMINDEX_KILL_WORKER_BATCH_SLEEP"
LINGER_ENV = "SEMINDEX_KILL_WORKER_LINGER"


class SlowEncoder:
    """The version's own encoder, with a pause before every batch."""

    def __init__(self, encoder: Encoder, pause_seconds: float) -> None:
        self.encoder = encoder
        self.name = encoder.name
        self.revision = encoder.revision
        self.pause_seconds = pause_seconds

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        time.sleep(self.pause_seconds)
        return self.encoder.encode(texts)


class PhaseMarkers:
    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def mark(self, phase: str) -> None:
        # One write(2) per line: the line is in the file the moment the call returns, kill or not.
        os.write(self.fd, f"{phase} {time.monotonic():.6f}\n".encode())


def read_markers(path: Path) -> dict[str, float]:
    """{phase: monotonic time} for every phase the worker reached."""
    if not path.exists():
        return {}
    markers = {}
    for line in path.read_text().splitlines():
        phase, _, stamp = line.partition(" ")
        if phase in PHASES and stamp:
            markers[phase] = float(stamp)
    return markers


def run(database_url: str, version_key: str, *, batch_size: int, corpus: Path | None, markers: PhaseMarkers) -> None:
    markers.mark("start")
    db = open_database(database_url)
    if corpus is not None:
        markers.mark("ingest")
        raw_records.ingest_files(db, [corpus])
        chunks.sync_chunks(db, ChunkingParameters())
    version = get_version(db, version_key)
    encoder = load_encoder(version.encoder_name)
    pause = float(os.environ.get(BATCH_SLEEP_ENV, "0") or 0)
    markers.mark("backfill")
    embeddings.backfill(db, version, batch_size=batch_size, encoder=SlowEncoder(encoder, pause) if pause else encoder)
    markers.mark("index")
    indexes.build_hnsw(db, version, HNSW_PARAMETERS)
    markers.mark("done")
    time.sleep(float(os.environ.get(LINGER_ENV, "0") or 0))


def run_dagster_graph(database_url: str, version_key: str, *, batch_size: int, corpus: Path, markers: PhaseMarkers) -> int:
    markers.mark("start")
    import dagster as dg

    from semindex_app import definitions
    from semindex_app.resources import EncoderResource, PostgresResource

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("embedding_versions", [version_key])
    markers.mark("dagster")
    result = dg.materialize(
        [*definitions.all_assets, *definitions.all_checks],
        instance=instance,
        partition_key=version_key,
        resources={"postgres": PostgresResource(database_url=database_url), "encoders": EncoderResource()},
        run_config={"ops": {"raw_records": {"config": {"paths": [str(corpus)]}},
                            "embeddings": {"config": {"batch_size": batch_size}}}},
        selection=dg.AssetSelection.assets(*INDEXING_ASSETS),
        raise_on_error=False,
    )
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                # Dagster wraps the asset's exception: the first error that is not Dagster's own is
                # what the asset raised (its own cause, the driver's error, is in its message).
                error = event.step_failure_data.error
                while error.cause is not None and (error.cls_name or "").startswith("Dagster"):
                    error = error.cause
                message = error.message.strip().replace("\n", " ")
                print(f"step {event.step_key} failed: {message}", file=sys.stderr)
        return 1
    markers.mark("done")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kill_worker")
    parser.add_argument("database_url")
    parser.add_argument("version_key")
    parser.add_argument("--markers", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--dagster", action="store_true")
    args = parser.parse_args(argv)
    if args.dagster:
        return run_dagster_graph(args.database_url, args.version_key, batch_size=args.batch_size,
                                 corpus=args.corpus, markers=PhaseMarkers(args.markers))
    run(args.database_url, args.version_key, batch_size=args.batch_size, corpus=args.corpus,
        markers=PhaseMarkers(args.markers))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
