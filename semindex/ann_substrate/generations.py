"""Where a version's zvec generations live and what PostgreSQL knows of them.

A generation is an immutable zvec collection directory, `<zvec home>/v<version id>/g<n>`, built by
the builder (semindex.ann_substrate.builder) and published in `semindex.ann_generations` with its
horizon: every change with a smaller transaction id is in it. The published row is the durable
watermark; a directory without a published or retired row is an interrupted build's leftover.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from psycopg.rows import class_row

from semindex import settings
from semindex.database import Database
from semindex.errors import Unavailable
from semindex.sql_files import statement
from semindex.vectors.version import EmbeddingVersion

ZVEC_EXTRA = "semindex[zvec]"
VECTOR_FIELD = "embedding"  # the vector field of every generation's collection
ZVEC_VERSION = "0.8.0"


def require_zvec():
    """The zvec module, or Unavailable naming the extra that installs it."""
    try:
        import zvec
    except ImportError:
        raise Unavailable(f"the zvec ANN engine needs the zvec package: pip install '{ZVEC_EXTRA}' "
                          f"(zvec=={ZVEC_VERSION})") from None
    return zvec


@dataclass(frozen=True)
class Generation:
    generation: int
    horizon: str  # an xid8, as text
    documents: int
    recall_passed: bool
    published_at: datetime


@dataclass(frozen=True)
class GenerationRow:
    generation: int
    horizon: str
    state: str
    documents: int
    build_seconds: float
    disk_bytes: int
    recall: dict
    recall_passed: bool
    published_at: datetime


def version_home(version: EmbeddingVersion) -> Path:
    path = settings.zvec_home() / f"v{version.version_id}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def generation_path(version: EmbeddingVersion, generation: int) -> Path:
    return version_home(version) / f"g{generation}"


def published(db: Database, version: EmbeddingVersion) -> Generation | None:
    with db.connection() as conn:
        return conn.cursor(row_factory=class_row(Generation)).execute(
            statement("ann_substrate", "published"), {"version_id": version.version_id}).fetchone()


def generations(db: Database, version: EmbeddingVersion) -> list[GenerationRow]:
    with db.connection() as conn:
        return conn.cursor(row_factory=class_row(GenerationRow)).execute(
            statement("ann_substrate", "generations"), {"version_id": version.version_id}).fetchall()


def pending_changes(db: Database, version: EmbeddingVersion, since: str, cap: int) -> int:
    """Changes since `since` (an xid8), counted up to `cap`."""
    with db.connection() as conn:
        return conn.execute(statement("ann_substrate", "pending_changes"),
                            {"version_id": version.version_id, "since": since, "cap": cap}).fetchone()[0]


def disk_bytes(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def unused(path: Path) -> bool:
    """True when no process holds the collection open: zvec holds a shared flock on its LOCK file
    for every read-only handle, so an exclusive non-blocking lock succeeds only when none is left."""
    lock = path / "LOCK"
    if not lock.exists():
        return True
    descriptor = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return True
    finally:
        os.close(descriptor)
