"""Runs one embedding backfill worker in its own process, so a test can SIGKILL it part-way.

    python -m tests.backfill_worker DATABASE_URL VERSION_KEY BATCH_SIZE [--sleep S] [--encode-log PATH] [--report]

--sleep pauses before every encode call, to spread kill points over the backfill; --encode-log appends
the sha256 of every text the worker encodes (the dimension probe aside), one write(2) per call made
before the vectors are returned, so a test counts encodes even of a worker killed before it committed
them; --report prints the worker's BackfillReport as JSON when it ends. The claims' lease comes from
SEMINDEX_BACKFILL_LEASE_SECONDS, as in any worker.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Sequence

import numpy as np

from semindex.database import open_database
from semindex.embeddings import backfill
from semindex.encoders import Encoder, load_encoder
from semindex.vectors.version import get_version

PROBE = "dimension probe"


class LoggedEncoder:
    """The version's encoder, pausing before each call and logging what it encodes."""

    def __init__(self, encoder: Encoder, pause_seconds: float, log_fd: int | None) -> None:
        self.encoder = encoder
        self.name = encoder.name
        self.revision = encoder.revision
        self.pause_seconds = pause_seconds
        self.log_fd = log_fd

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if list(texts) != [PROBE]:
            time.sleep(self.pause_seconds)
        vectors = self.encoder.encode(texts)
        if self.log_fd is not None and list(texts) != [PROBE]:
            lines = "".join(f"{os.getpid()} {hashlib.sha256(text.encode()).hexdigest()}\n" for text in texts)
            os.write(self.log_fd, lines.encode())
        return vectors


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.backfill_worker")
    parser.add_argument("database_url")
    parser.add_argument("version_key")
    parser.add_argument("batch_size", type=int)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--encode-log")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    db = open_database(args.database_url)
    version = get_version(db, args.version_key)
    encoder = load_encoder(version.encoder_name)
    log_fd = os.open(args.encode_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if args.encode_log else None
    if args.sleep or log_fd is not None:
        encoder = LoggedEncoder(encoder, args.sleep, log_fd)
    report = backfill(db, version, batch_size=args.batch_size, encoder=encoder)
    if args.report:
        print(json.dumps(dataclasses.asdict(report)), flush=True)


if __name__ == "__main__":
    main()
