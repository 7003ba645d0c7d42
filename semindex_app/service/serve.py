"""Run the service under uvicorn: the shared secrets and folders every worker needs, set in the
environment before any worker starts, and the log format (every line names its request): the one
the CLI and the Dagster runs use (semindex_app.logs), plain or JSON by SEMINDEX_LOG_FORMAT, with the
traceback of an unexpected error (a 500) kept in the log."""

from __future__ import annotations

import logging.config
import os
import secrets
import shutil

import uvicorn

from semindex import settings
from semindex.database import redact, resolve_database_url

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "semindex_app.service.app.RequestIdFilter"}},
    # A factory, so each worker reads SEMINDEX_LOG_FORMAT (inherited from `semindex serve`) itself.
    "formatters": {"semindex": {"()": "semindex_app.logs.formatter", "tracebacks": True}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "semindex", "filters": ["request_id"]}},
    "loggers": {
        "semindex": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
    },
}


def prepare_environment() -> dict[str, str]:
    """What the workers share: the cursor key, the snapshot folder, the metrics folder (fresh: the
    multi-process metrics of an earlier run must not be summed into this one's)."""
    runs = settings.semindex_home() / "run"
    _remove_dead_runs(runs)
    run = runs / f"serve-{os.getpid()}"
    shared = {}
    if settings.cursor_secret() is None:
        shared["SEMINDEX_CURSOR_SECRET"] = secrets.token_urlsafe(32)
    if settings.snapshot_dir() is None:
        shared["SEMINDEX_SNAPSHOT_DIR"] = str(run / "snapshots")
    metrics_dir = run / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    shared["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    os.environ.update(shared)
    return shared


def _remove_dead_runs(runs) -> None:
    """Folders of earlier `semindex serve` processes that have exited (snapshots, metrics): removed
    at the next start, since uvicorn ends a signalled process before any clean-up of ours runs."""
    if not runs.exists():
        return
    for folder in runs.glob("serve-*"):
        pid = folder.name.removeprefix("serve-")
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # alive, another user's
            continue


def serve(host: str, port: int, workers: int) -> None:
    prepare_environment()
    url = resolve_database_url()
    # Every worker resolves the same URL (the embedded server's, when DATABASE_URL is unset).
    os.environ["DATABASE_URL"] = url
    logging.config.dictConfig(LOGGING)
    shown = f"[{host}]" if ":" in host else host
    print(f"semindex serve: http://{shown}:{port}  (API docs: http://{shown}:{port}/docs; "
          f"{workers} worker{'s' if workers > 1 else ''}; database {redact(url)})", flush=True)
    uvicorn.run("semindex_app.service.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_config=LOGGING, access_log=False, timeout_graceful_shutdown=10)
