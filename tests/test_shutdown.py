"""Clean shutdown, with real processes: SIGTERM (what a service manager or a container runtime
sends) or SIGINT (Ctrl-C) stops `semindex dev`, `semindex run`, `semindex versions backfill` and
`semindex serve` within a bounded time, exiting non-zero, and no process they started survives. The
embedded PostgreSQL, which every process shares, keeps running."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from semindex_app.shutdown import group_members

PROJECT = Path(__file__).resolve().parent.parent
SEMINDEX = [sys.executable, "-m", "semindex_app.cli"]
STOP_TIMEOUT = 8  # SEMINDEX_SHUTDOWN_TIMEOUT's default
START_TIMEOUT = 180
VERSIONS_TOML = """
[versions.tiny]
encoder = { kind = "hashing", location = "32" }
dimensions = 32
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state) of every process."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        table[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def _descendants(root: int) -> set[int]:
    table = _processes()
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += [child for child, (parent, _, _) in table.items() if parent == pid and child not in found]
    return found


def _alive(pids: set[int]) -> set[int]:
    table = _processes()
    return {pid for pid in pids if pid in table and table[pid][2] not in ("Z", "X")}


class Output:
    """A process's merged stdout and stderr, read as it comes."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process) -> None:
        for line in process.stdout:
            self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        self._thread.join(timeout=5)
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, process: subprocess.Popen, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in list(self.lines)):
                return
            if process.poll() is not None:
                pytest.fail(f"exited with {process.returncode} before {pattern!r}:\n" + "\n".join(self.lines[-60:]))
            time.sleep(0.1)
        pytest.fail(f"{pattern!r} did not show within {timeout} s:\n" + "\n".join(self.lines[-60:]))


def _start(argv: list[str], env: dict) -> tuple[subprocess.Popen, Output]:
    process = subprocess.Popen([*SEMINDEX, *argv], cwd=PROJECT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return process, Output(process)


@pytest.fixture
def env(semindex_home, database_url, tmp_path):
    versions = tmp_path / "versions.toml"
    versions.write_text(VERSIONS_TOML)
    environment = {**os.environ, "SEMINDEX_HOME": str(semindex_home), "PYTHONPATH": str(PROJECT),
                   "DATABASE_URL": database_url, "SEMINDEX_VERSIONS_FILE": str(versions)}
    for name in ("DAGSTER_HOME", "SEMINDEX_DEBUG", "SEMINDEX_LOG_FORMAT", "SEMINDEX_SHUTDOWN_TIMEOUT"):
        environment.pop(name, None)
    return environment


def _wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _alive(pids)


def _assert_server_still_serves(server_url: str) -> None:
    with psycopg.connect(server_url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize(("sent", "to"), [("SIGTERM", "process"), ("SIGINT", "group"), ("SIGKILL", "process")])
def test_semindex_dev_stops_dagster_and_all_its_processes(env, server_url, sent, to):
    """SIGTERM to semindex alone (a service manager), SIGINT to its group (Ctrl-C in a terminal), and
    SIGKILL, which semindex cannot handle: dagster dev then gets SIGTERM from the kernel (its death
    signal) and stops the rest. No webserver, daemon or code server is left behind."""
    port = _free_port()
    process, output = _start(["dev", "--port", str(port)], env)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, output.text()[-5000:]
            time.sleep(0.5)
        time.sleep(2)  # the daemon and the code servers are up too
        started = _descendants(process.pid)
        groups = {_processes()[pid][1] for pid in started if pid in _processes()}
        assert len(started) >= 4, started  # semindex, dagster dev, webserver, daemon (and code servers)
        assert len(groups) == 2  # semindex's own, and the one dagster dev leads

        stopped_at = time.monotonic()
        signum = getattr(signal, sent)
        if to == "group":
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        code = process.wait(timeout=60)
        left = _wait_gone(started, STOP_TIMEOUT + 20)
        took = time.monotonic() - stopped_at
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for pid in _alive(_descendants(process.pid)):
            os.kill(pid, signal.SIGKILL)
    text = output.text()
    assert not left, f"left running after {sent}: {left}\n{text[-3000:]}"
    for group in groups:
        assert not group_members(group), group
    if sent == "SIGKILL":
        assert code == -signal.SIGKILL
    else:
        assert code == 128 + signum, text[-3000:]
        assert took < STOP_TIMEOUT + 2, took
        # Dagster's own graceful stop, or (on a machine too loaded for it) the bound enforced.
        assert re.fullmatch(rf"semindex dev: (stopped by {sent}|still running {STOP_TIMEOUT} s after {sent}: stopped at once)",
                            text.splitlines()[-1]), text[-3000:]
        assert "Traceback" not in text, text[-5000:]
    _assert_server_still_serves(server_url)
    print(f"\nsemindex dev, {sent} to the {to}: every process gone {took:.1f} s later")


@pytest.mark.parametrize("argv", [["run", "--version", "tiny"], ["versions", "backfill", "tiny"]],
                         ids=["run", "versions-backfill"])
def test_a_run_stopped_by_sigterm_ends_at_once_marks_its_run_failed_and_keeps_committed_work(
        env, server_url, database_url, argv):
    process, output = _start(argv, env)
    try:
        output.wait_for(r"\[run=[0-9a-f]{8} step=chunks\]", process)
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        took = time.monotonic() - stopped_at
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    text = output.text()
    command = " ".join(argv[:2] if argv[0] == "versions" else argv[:1])
    assert code == 128 + signal.SIGTERM, text[-3000:]
    assert took < STOP_TIMEOUT, took
    assert text.splitlines()[-1] == f"semindex {command}: stopped by SIGTERM; committed work is kept, run again to resume"
    assert "Traceback" not in text and "Stack Trace" not in text, text[-5000:]
    assert not group_members(process.pid)
    with psycopg.connect(database_url) as conn:
        # Dagster recorded the run as failed (interrupted), and what it committed stays.
        statuses = [row[0] for row in conn.execute("SELECT status FROM runs")]
        assert statuses == ["FAILURE"], statuses
        assert conn.execute("SELECT count(*) FROM semindex.raw_records").fetchone()[0] > 2000
    _assert_server_still_serves(server_url)
    print(f"\nsemindex {command}: exit {code} {took:.2f} s after SIGTERM")


def test_semindex_serve_with_workers_stops_every_worker(env, server_url):
    port = _free_port()
    process, output = _start(["serve", "--port", str(port), "--workers", "2"], env)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, output.text()[-5000:]
            time.sleep(0.5)
        output.wait_for(r"Started server process .*", process)
        time.sleep(1)
        started = _descendants(process.pid)
        assert len(started) >= 3, started  # the supervisor and two workers
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        left = _wait_gone(started, 20)
        took = time.monotonic() - stopped_at
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    text = output.text()
    assert not left and not group_members(process.pid), (left, text[-3000:])
    assert code != 0, text[-3000:]
    assert took < 15, took
    assert "Traceback" not in text, text[-5000:]
    _assert_server_still_serves(server_url)
