"""Fixtures: one embedded PostgreSQL per test session (never the developer's own), a fresh
database per test, and small real-text corpora cut from the bundled sample."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import uuid
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest

from semindex.data import SAMPLE_CORPUS_PATH


@pytest.fixture(scope="session")
def semindex_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("semindex-home")
    os.environ["SEMINDEX_HOME"] = str(home)
    os.environ.pop("DATABASE_URL", None)
    return home


@pytest.fixture(scope="session")
def server_url(semindex_home) -> str:
    from semindex.database import embedded_database_url

    yield embedded_database_url(semindex_home)
    _stop_embedded_server(semindex_home / "pgdata")


def _stop_embedded_server(pgdata: Path) -> None:
    """The session's server outlives its processes by design (Dagster runs share it); the test
    session is its only user, so it stops it: SIGINT is PostgreSQL's fast shutdown."""
    import signal
    import time

    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().splitlines()[0])
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def _database_url(server_url: str, name: str) -> str:
    base, _, query = server_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}?{query}"


@pytest.fixture
def database_url(server_url) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _database_url(server_url, name)
    from semindex import database as database_module

    opened = database_module._open_databases.pop(_database_url(server_url, name), None)
    if opened:
        opened.close()
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def scratch_database(server_url: str, prefix: str = "m"):
    """A database of its own for a module's fixture (opened through open_database), dropped after."""
    from semindex import database as database_module
    from semindex.database import open_database

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _database_url(server_url, name)
    try:
        yield url, open_database(url)
    finally:
        opened = database_module._open_databases.pop(url, None)
        if opened:
            opened.close()
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def chromium() -> None:
    """Debian's chromium and chromium-driver, installed on first use: a skipped UI test would hide
    a broken page, so a machine without them gets them (or the test fails saying why)."""
    from tests.browser import ChromiumUnavailable, ensure_chromium

    try:
        ensure_chromium()
    except ChromiumUnavailable as error:
        pytest.fail(f"headless Chromium is required for the UI tests: {error}")


@pytest.fixture
def browser(chromium, tmp_path):
    from tests.browser import headless_chromium

    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    driver = headless_chromium(profile)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def db(database_url):
    from semindex.database import open_database

    return open_database(database_url)


def sample_records(per_stream: int) -> list[dict]:
    """The first `per_stream` records of every stream of the bundled sample (3 connectors, 7 streams)."""
    by_stream: dict[str, list[dict]] = defaultdict(list)
    with SAMPLE_CORPUS_PATH.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            bucket = by_stream[f"{record['connector_instance_id']}/{record['stream']}"]
            if len(bucket) < per_stream:
                bucket.append(record)
    return list(itertools.chain.from_iterable(by_stream.values()))


def write_jsonl(path: Path, records: list[dict | str]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write((record if isinstance(record, str) else json.dumps(record, ensure_ascii=False)) + "\n")
    return path


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    return write_jsonl(tmp_path / "small.jsonl", sample_records(per_stream=12))
