"""`semindex db status|start|stop` on an embedded PostgreSQL of the test's own (the session's server is
shared by every other test, so it is never stopped here), run as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from semindex.database import EMBEDDED_DATA_DIR, embedded_server_users
from tests.conftest import _stop_embedded_server

PROJECT = Path(__file__).resolve().parent.parent
SEMINDEX = [sys.executable, "-m", "semindex_app.cli"]
# A process that uses the embedded server (as every semindex command does) and stays.
USER = ("import sys, time; from pathlib import Path; from semindex.database import embedded_database_url; "
        "embedded_database_url(Path(sys.argv[1])); print('ready', flush=True); time.sleep(600)")


@pytest.fixture
def home(tmp_path):
    folder = tmp_path / "home"
    folder.mkdir()
    try:
        yield folder
    finally:
        _stop_embedded_server(folder / EMBEDDED_DATA_DIR)


def _db(home: Path, *argv: str, **extra_env) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEMINDEX_HOME": str(home), "PYTHONPATH": str(PROJECT), **extra_env}
    for name in ("DATABASE_URL", "DAGSTER_HOME", "SEMINDEX_DEBUG"):
        if name not in extra_env:
            env.pop(name, None)
    return subprocess.run([*SEMINDEX, "db", *argv], env=env, capture_output=True, text=True, timeout=180, cwd=PROJECT)


def _status(home: Path) -> dict:
    result = _db(home, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_status_start_stop_and_the_refusal_while_another_process_uses_the_server(home):
    pgdata = home / EMBEDDED_DATA_DIR
    # Nothing there yet: status says so, and starts nothing.
    before = _status(home)
    assert before["kind"] == "embedded" and before["running"] is False and before["data_dir"] == str(pgdata)
    assert not (pgdata / "postmaster.pid").exists()
    assert "not created yet" in _db(home, "status").stdout

    started = _db(home, "start")
    assert started.returncode == 0 and "is running: postgresql://" in started.stdout, started.stderr
    status = _status(home)
    assert status["running"] is True and status["pid"] and status["url"].endswith(f"?host={pgdata}")
    assert status["server_version"].startswith("18") and status["database_bytes"] > 0
    assert status["data_dir_bytes"] > 10 * 1024 * 1024  # a PostgreSQL cluster on disk
    assert {"vector", "btree_gin", "pg_trgm"} <= set(status["extensions"]), status["extensions"]
    assert status["users"] == [] and status["other_connections"] == 0
    text = _db(home, "status").stdout
    for label in ("database:", "running:     yes", "data folder:", "size:", "version:     18", "extensions:  vector"):
        assert label in text, text
    assert "was already running" in _db(home, "start").stdout

    # Another semindex process uses it: stop is refused (naming it) until --force.
    user = subprocess.Popen([sys.executable, "-c", USER, str(home)], stdout=subprocess.PIPE, text=True, cwd=PROJECT,
                            env={**os.environ, "PYTHONPATH": str(PROJECT)})
    try:
        assert user.stdout.readline().strip() == "ready"
        assert [found.pid for found in embedded_server_users(home)] == [user.pid]
        assert _status(home)["users"][0]["pid"] == user.pid
        refused = _db(home, "stop")
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert refused.stderr.startswith("semindex db stop: the embedded PostgreSQL") and f"pid {user.pid}" in refused.stderr
        assert "--force" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
        assert _status(home)["running"] is True  # refused means untouched

        forced = _db(home, "stop", "--force")
        assert forced.returncode == 0 and "stopped" in forced.stdout, forced.stderr
        assert _status(home)["running"] is False and not (pgdata / "postmaster.pid").exists()
    finally:
        user.send_signal(signal.SIGKILL)
        user.wait()

    # Its user was killed: the registration it left is stale and ignored (and cleaned up).
    assert embedded_server_users(home) == []
    assert "was not running" in _db(home, "stop").stdout
    assert _db(home, "start").returncode == 0
    url = _status(home)["url"]
    with psycopg.connect(url) as conn:  # a client connection: stopping would end it
        connected = _db(home, "stop")
        assert connected.returncode == 2 and "1 other connection;" in connected.stderr, connected.stderr
    stopped = _db(home, "stop")
    assert stopped.returncode == 0 and stopped.stdout.strip() == "the embedded PostgreSQL stopped", stopped.stderr
    deadline = time.monotonic() + 10
    while (pgdata / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (pgdata / "postmaster.pid").exists()


def test_start_and_stop_refuse_an_external_database_and_status_reports_it_unreachable(home):
    url = "postgresql://ann:s3cret@127.0.0.1:1/semindex"
    for verb in ("start", "stop"):
        result = _db(home, verb, DATABASE_URL=url)
        assert result.returncode == 2 and result.stderr.startswith(f"semindex db {verb}: DATABASE_URL is set"), result.stderr
    status = _db(home, "status", DATABASE_URL=url)
    assert status.returncode == 1 and "s3cret" not in status.stdout + status.stderr
    assert "kind:        external" in status.stdout and "postgresql://ann:***@127.0.0.1:1/semindex" in status.stdout
    assert status.stderr.strip() == ("semindex db status: cannot connect to PostgreSQL at postgresql://ann:***@127.0.0.1:1/"
                                     "semindex (connection refused: no server is listening there; is PostgreSQL running?)")
    shown = _db(home, "url", DATABASE_URL=url)
    assert shown.stdout.strip() == "postgresql://ann:***@127.0.0.1:1/semindex"
    assert _db(home, "url", "--show-password", DATABASE_URL=url).stdout.strip() == url
    assert not (home / EMBEDDED_DATA_DIR).exists()  # none of it touched the embedded server


def test_status_of_a_reachable_external_database(home, db, database_url):
    result = _db(home, "status", "--json", DATABASE_URL=database_url)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["kind"] == "external" and status["running"] is True and status["data_dir"] is None
    assert status["server_version"].startswith("18") and status["database_bytes"] > 0
    assert {"vector", "btree_gin", "pg_trgm"} <= set(status["extensions"])
