"""Sensors. The inbox sensor starts an index run when JSONL files land in SEMINDEX_HOME/inbox."""

from __future__ import annotations

import hashlib
import json

import dagster as dg

from resources import PostgresResource
from semindex.settings import semindex_home


def inbox_state() -> dict[str, list[int]]:
    inbox = semindex_home() / "inbox"
    if not inbox.is_dir():
        return {}
    return {path.name: [path.stat().st_size, path.stat().st_mtime_ns] for path in sorted(inbox.glob("*.jsonl"))}


@dg.sensor(job_name="index_pipeline", minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.STOPPED)
def inbox_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    """One index run per new state of the inbox, for the active embedding version.

    The cursor holds the files already seen (name, size, mtime) and a request counter. Dagster
    remembers run keys forever and silently drops a repeated one, so the key carries the counter
    and a hash of the inbox state: a reset cursor cannot make it repeat.
    """
    from semindex.embeddings import active_version

    seen = json.loads(context.cursor) if context.cursor else {"files": {}, "requests": 0}
    current = inbox_state()
    changed = sorted(name for name, state in current.items() if seen["files"].get(name) != state)
    if not changed:
        return dg.SkipReason("no new or changed files in the inbox")
    version = active_version(postgres.database())
    if version is None:
        return dg.SkipReason("no active embedding version yet: run `semindex run` first")
    requests = seen["requests"] + 1
    context.update_cursor(json.dumps({"files": current, "requests": requests}))
    state_hash = hashlib.sha256(json.dumps(current, sort_keys=True).encode()).hexdigest()[:12]
    return dg.RunRequest(
        run_key=f"inbox-{requests}-{state_hash}",
        partition_key=version.version_key,
        tags={"semindex/inbox_files": ",".join(changed)[:200]},
    )
