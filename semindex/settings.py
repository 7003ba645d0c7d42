"""Every setting semindex reads from the environment, read here and nowhere else, each with the
parser that refuses a bad value by naming it.

  SEMINDEX_HOME                state folder: embedded PostgreSQL, Dagster's home, inbox, models
                               (default: .semindex in the current directory)
  DATABASE_URL                 any PostgreSQL with pgvector 0.8 (default: the embedded server)
  SEMINDEX_VERSIONS_FILE       embedding version declarations (default: the packaged file)
  SEMINDEX_MAX_FIELD_BYTES     largest field ingest accepts (default 2 MiB; larger is quarantined)
  SEMINDEX_SEARCH_CONCURRENCY  per-source search queries at once, per process (default 8)
  SEMINDEX_BACKFILL_BACKOFF_SECONDS  first wait before a failed backfill is retried (default 60)
  SEMINDEX_BACKFILL_LEASE_SECONDS    how long a backfill worker's claim on a range lasts without
                               renewal before another worker may take it over (default 300, at least 1)
  SEMINDEX_MIGRATION_BATCH_SIZE      rows per blob-migration batch (default 50,000)
  SEMINDEX_MIGRATION_MAINTENANCE_WORK_MEM  memory for the blob index build (default 256MB)
  SEMINDEX_CURSOR_SECRET       key that signs the HTTP service's cursors (default: a random one per
                               `semindex serve`, shared by its workers)
  SEMINDEX_SHADOW_DATABASE_URL a URL that may insert into semindex.shadow_observations (the writer's):
                               set, the HTTP service mirrors live queries to candidate versions
  SEMINDEX_SHADOW_SAMPLE_RATE  share of live semantic and hybrid queries mirrored (default 0.1)
  SEMINDEX_ZVEC_HOME           where zvec generations live (default: SEMINDEX_HOME/zvec)
  SEMINDEX_SNAPSHOT_DIR        where the HTTP service keeps cursor snapshots, shared by its workers
                               (default: a folder per `semindex serve` under SEMINDEX_HOME/run)
  SEMINDEX_CONNECT_TIMEOUT     seconds to wait for PostgreSQL to answer a new connection (default 10,
                               at least 2; a connect_timeout in the URL wins)
  SEMINDEX_POOL_TIMEOUT        seconds to wait for a free pooled connection before giving up (default 30)
  SEMINDEX_SHUTDOWN_TIMEOUT    seconds a stopped (SIGTERM, SIGINT) `semindex` command waits for its work
                               and child processes to end before it kills them (default 8)
  SEMINDEX_DEBUG               1 (or true, yes, on): errors print their traceback (default 0; `--debug`)
  SEMINDEX_LOG_FORMAT          plain or json: the log lines of the CLI, the runs and the HTTP service
                               (default plain; `--log-format`)
  SEMINDEX_INDEX_BUILD_WORKERS parallel workers for index builds (default: probed; 0 = serial)
  SEMINDEX_SHARED_BUFFERS      shared_buffers of a new embedded server (default: a quarter of the
                               machine's memory, between 128MB and 8GB)
  SEMINDEX_DEVICE              auto, cpu or cuda: where encoders run (default auto: a CUDA GPU when
                               torch, or onnxruntime's CUDA provider, can use one; else the CPU)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from semindex.data import DEFAULT_VERSIONS_FILE
from semindex.errors import InvalidInput

DEFAULT_MAX_FIELD_BYTES = 2 * 1024 * 1024
DEFAULT_SEARCH_CONCURRENCY = 8
DEFAULT_BACKOFF_SECONDS = 60
DEFAULT_MIGRATION_BATCH_SIZE = 50_000
MAX_MIGRATION_BATCH_SIZE = 1_000_000
DEFAULT_MAINTENANCE_WORK_MEM = "256MB"
DEFAULT_CONNECT_TIMEOUT = 10
DEFAULT_POOL_TIMEOUT = 30
DEFAULT_SHUTDOWN_TIMEOUT = 8
LOG_FORMATS = ("plain", "json")
DEVICES = ("auto", "cpu", "cuda")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _raw(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def semindex_home() -> Path:
    """The state folder (created when missing): SEMINDEX_HOME, else .semindex in the current directory."""
    configured = _raw("SEMINDEX_HOME")
    home = Path(configured).expanduser() if configured else Path.cwd() / ".semindex"
    home.mkdir(parents=True, exist_ok=True)
    return home.resolve()


def models_home() -> Path:
    """Where model files that ship packed (all-mpnet-base-v2's parts) are extracted once."""
    return semindex_home() / "models"


def inbox() -> Path:
    """JSONL files dropped here are ingested by the next run (and by the inbox sensor)."""
    return semindex_home() / "inbox"


def external_database_url() -> str | None:
    """DATABASE_URL when set (any PostgreSQL with pgvector 0.8); None means the embedded server."""
    return _raw("DATABASE_URL")


def versions_file() -> Path:
    """The embedding version declarations: SEMINDEX_VERSIONS_FILE, else the file shipped in the package."""
    configured = _raw("SEMINDEX_VERSIONS_FILE")
    if configured:
        return Path(configured).expanduser()
    return DEFAULT_VERSIONS_FILE


def env_int(name: str, default: int, *, minimum: int = 1, maximum: int | None = None) -> int:
    """A whole number from the environment, with an error that names the variable and the value."""
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise InvalidInput(f"{name}={raw!r} is not a whole number") from None
    return whole_number(value, name, minimum=minimum, maximum=maximum)


def whole_number(value, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name}={value!r} is not a whole number")
    if value < minimum:
        raise InvalidInput(f"{name}={value} is below the minimum of {minimum}")
    if maximum is not None and value > maximum:
        raise InvalidInput(f"{name}={value} is above the maximum of {maximum:,}")
    return value


def max_field_bytes() -> int:
    return env_int("SEMINDEX_MAX_FIELD_BYTES", DEFAULT_MAX_FIELD_BYTES)


def search_concurrency() -> int:
    return env_int("SEMINDEX_SEARCH_CONCURRENCY", DEFAULT_SEARCH_CONCURRENCY)


def backfill_backoff_seconds() -> int:
    return env_int("SEMINDEX_BACKFILL_BACKOFF_SECONDS", DEFAULT_BACKOFF_SECONDS, minimum=0)


def migration_batch_size(given: int | None = None) -> int:
    """Rows per blob-migration batch: the argument, else SEMINDEX_MIGRATION_BATCH_SIZE, else 50,000."""
    if given is not None:
        return whole_number(given, "batch_size", maximum=MAX_MIGRATION_BATCH_SIZE)
    return env_int("SEMINDEX_MIGRATION_BATCH_SIZE", DEFAULT_MIGRATION_BATCH_SIZE, maximum=MAX_MIGRATION_BATCH_SIZE)


def migration_maintenance_work_mem(given: str | None = None) -> str:
    """maintenance_work_mem for the blob index build: the argument, else the environment, else 256MB."""
    if given is not None:
        return memory_size(given, "maintenance_work_mem")
    name = "SEMINDEX_MIGRATION_MAINTENANCE_WORK_MEM"
    return memory_size(_raw(name) or DEFAULT_MAINTENANCE_WORK_MEM, name)


_MEMORY = re.compile(r"^\s*(\d+)\s*(kB|MB|GB|TB)?\s*$")
_KB_PER_UNIT = {"kB": 1, "MB": 1024, "GB": 1024**2, "TB": 1024**3}


def memory_size(value, name: str) -> str:
    """A memory size in PostgreSQL's own syntax (a number, optionally kB, MB, GB or TB; a bare number
    is kB), between 1MB and PostgreSQL's maximum (2147483647kB), normalised ("256MB")."""
    match = _MEMORY.match(str(value))
    if not match:
        raise InvalidInput(
            f"{name}={value!r} is not a memory size PostgreSQL understands (say 256MB or 2GB; units kB, MB, GB, TB)"
        )
    kilobytes = int(match.group(1)) * _KB_PER_UNIT[match.group(2) or "kB"]
    if not 1024 <= kilobytes <= 2_147_483_647:
        raise InvalidInput(f"{name}={value!r} must be between 1MB and 2147483647kB")
    return f"{match.group(1)}{match.group(2) or 'kB'}"


def cursor_secret() -> bytes | None:
    """The key that signs cursors; None when unset (`semindex serve` then makes one for its workers)."""
    value = _raw("SEMINDEX_CURSOR_SECRET")
    if value is None:
        return None
    if len(value) < 16:
        raise InvalidInput(f"SEMINDEX_CURSOR_SECRET is {len(value)} characters; use at least 16 random ones")
    return value.encode("utf-8")


def snapshot_dir() -> Path | None:
    """SEMINDEX_SNAPSHOT_DIR when set (created when missing)."""
    value = _raw("SEMINDEX_SNAPSHOT_DIR")
    if value is None:
        return None
    path = Path(value)
    path.mkdir(parents=True, exist_ok=True)
    return path


def shadow_database_url() -> str | None:
    return _raw("SEMINDEX_SHADOW_DATABASE_URL")


def shadow_sample_rate() -> float:
    value = _raw("SEMINDEX_SHADOW_SAMPLE_RATE")
    if value is None:
        return 0.1
    try:
        rate = float(value)
    except ValueError:
        raise InvalidInput(f"SEMINDEX_SHADOW_SAMPLE_RATE={value!r} is not a number between 0 and 1") from None
    if not 0 <= rate <= 1:
        raise InvalidInput(f"SEMINDEX_SHADOW_SAMPLE_RATE={value!r} must be between 0 and 1")
    return rate


def connect_timeout() -> int:
    """Seconds libpq waits for the server to answer a new connection (libpq's floor is 2)."""
    return env_int("SEMINDEX_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT, minimum=2, maximum=3600)


def pool_timeout() -> float:
    """Seconds a caller waits for a free pooled connection before Unavailable."""
    return float(env_int("SEMINDEX_POOL_TIMEOUT", DEFAULT_POOL_TIMEOUT, minimum=1, maximum=3600))


def shutdown_timeout() -> int:
    """Seconds a stopped command gives its work and child processes before killing them."""
    return env_int("SEMINDEX_SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT, minimum=1, maximum=600)


def env_flag(name: str, default: bool = False) -> bool:
    """A yes/no setting: 1, true, yes, on or 0, false, no, off (any case)."""
    raw = _raw(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise InvalidInput(f"{name}={raw!r} is not a yes/no value (use 1 or 0)")


def debug() -> bool:
    """SEMINDEX_DEBUG: errors print their traceback."""
    return env_flag("SEMINDEX_DEBUG")


def log_format() -> str:
    """SEMINDEX_LOG_FORMAT: plain (default) or json, one object a line."""
    value = (_raw("SEMINDEX_LOG_FORMAT") or "plain").lower()
    if value not in LOG_FORMATS:
        raise InvalidInput(f"SEMINDEX_LOG_FORMAT={value!r} must be one of {', '.join(LOG_FORMATS)}")
    return value


def device() -> str:
    """SEMINDEX_DEVICE: auto (default), cpu or cuda; semindex.encoders.device resolves auto."""
    value = (_raw("SEMINDEX_DEVICE") or "auto").lower()
    if value not in DEVICES:
        raise InvalidInput(f"SEMINDEX_DEVICE={value!r} must be one of {', '.join(DEVICES)}")
    return value


def zvec_home() -> Path:
    """SEMINDEX_ZVEC_HOME: where zvec generations live (default SEMINDEX_HOME/zvec); builder and
    search processes must run as the same OS user (zvec opens index files read-write even read-only)."""
    value = _raw("SEMINDEX_ZVEC_HOME")
    path = Path(value) if value else semindex_home() / "zvec"
    path.mkdir(parents=True, exist_ok=True)
    return path


def zvec_fault() -> str | None:
    """SEMINDEX_ZVEC_FAULT: tests only, a builder phase at which the builder kills itself (SIGKILL)."""
    return _raw("SEMINDEX_ZVEC_FAULT")


def index_build_workers() -> int | None:
    """SEMINDEX_INDEX_BUILD_WORKERS: parallel maintenance workers for index builds; None: probed
    (semindex.build_parallelism)."""
    if _raw("SEMINDEX_INDEX_BUILD_WORKERS") is None:
        return None
    return env_int("SEMINDEX_INDEX_BUILD_WORKERS", 0, minimum=0, maximum=64)


def shared_buffers() -> str:
    """SEMINDEX_SHARED_BUFFERS, else a quarter of physical memory (PostgreSQL's own advice for a
    dedicated server) between 128MB and 8GB, as PostgreSQL writes sizes."""
    raw = _raw("SEMINDEX_SHARED_BUFFERS")
    if raw is not None:
        return memory_size(raw, "SEMINDEX_SHARED_BUFFERS")
    try:
        physical_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError):
        return "128MB"
    return f"{max(128, min(8192, physical_mb // 4))}MB"
