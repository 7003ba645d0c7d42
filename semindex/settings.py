"""Where semindex keeps its state and which database it talks to, read from the environment."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def semindex_home() -> Path:
    """State folder: the embedded PostgreSQL data, Dagster's home, the ingest inbox.

    SEMINDEX_HOME overrides the default `.semindex/` inside the project.
    """
    configured = os.environ.get("SEMINDEX_HOME")
    home = Path(configured).expanduser() if configured else PROJECT_ROOT / ".semindex"
    home.mkdir(parents=True, exist_ok=True)
    return home.resolve()


def external_database_url() -> str | None:
    """DATABASE_URL when set (any PostgreSQL with pgvector 0.8); None means the embedded server."""
    url = os.environ.get("DATABASE_URL", "").strip()
    return url or None


def env_int(name: str, default: int, *, minimum: int = 1) -> int:
    """An integer setting from the environment, with an error that names the bad value."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ValueError(f"{name}={value} is below the minimum of {minimum}")
    return value
