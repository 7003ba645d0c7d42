"""A running `semindex serve` for tests: a database indexed from the real sample (a tiny hashing
version serving), and the service started as a separate process on a free loopback port, exactly
as a user starts it, then stopped with SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from semindex import chunks, embeddings, indexes, lifecycle, raw_records, retained_size
from semindex.access import Grant, create_token
from semindex.chunking import ChunkingParameters
from semindex.database import Database, open_database
from tests.conftest import _database_url, sample_records, write_jsonl
from tests.serving import serve

VERSION_KEY = "hash-64"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def indexed_database(server_url: str, folder: Path, per_stream: int = 10,
                     records: list[dict] | None = None) -> tuple[str, Database]:
    """A fresh database holding `records` (default: `per_stream` sample records of each of the 7
    streams), chunked, embedded by a 64-d hashing version that serves, indexed and projected."""
    name = f"http_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _database_url(server_url, name)
    db = open_database(url)
    raw_records.ingest_file(db, write_jsonl(folder / "records.jsonl", records or sample_records(per_stream=per_stream)))
    chunks.sync_chunks(db, ChunkingParameters())
    version = lifecycle.register_version(db, VERSION_KEY, "hashing-64", 64)
    embeddings.backfill(db, version)
    indexes.build_hnsw(db, version, indexes.HnswParameters())
    indexes.build_lexical_index(db)
    retained_size.refresh_projection(db)
    serve(db, VERSION_KEY)
    return url, db


def drop_database(server_url: str, url: str) -> None:
    from semindex import database as database_module

    opened = database_module._open_databases.pop(url, None)
    if opened:
        opened.close()
    name = url.split("?")[0].rsplit("/", 1)[1]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class RunningService:
    base_url: str
    process: subprocess.Popen
    log_path: Path

    def client(self, token: str | None = None, **options) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, **{"timeout": 60, **options})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running_service(database_url: str, home: Path, *, workers: int = 1, extra_env: dict | None = None,
                    ready_timeout: float = 120.0):
    """`semindex serve` on a free port, ready (its /readyz says so) before the body runs."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / f"serve-{port}.log"
    env = {**os.environ, "DATABASE_URL": database_url, "SEMINDEX_HOME": str(home), **(extra_env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "semindex_app.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    service = RunningService(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"semindex serve exited with {process.returncode}:\n{service.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{service.base_url}/readyz", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"semindex serve was not ready in {ready_timeout:.0f} s:\n{service.log()}")
            time.sleep(0.25)
        yield service
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def owner_token(db: Database) -> str:
    return create_token(db, "test owner")[0]


def grant_token(db: Database, grant: Grant, **options) -> str:
    return create_token(db, "test client", grant=grant, **options)[0]
