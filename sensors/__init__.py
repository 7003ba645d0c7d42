"""Sensors. The inbox sensor starts an index run when new JSONL files land in SEMINDEX_HOME/inbox."""

from __future__ import annotations

import json

import dagster as dg

from semindex.settings import semindex_home


@dg.sensor(job_name="index_pipeline", minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.STOPPED)
def inbox_sensor(context: dg.SensorEvaluationContext):
    """Requests one index run per new state of the inbox. The cursor holds the files already seen
    (name, size, mtime), and the run key carries a counter, because Dagster remembers run keys
    forever and would silently drop a second request for the same key."""
    from semindex.database import open_database
    from semindex.embeddings import active_version

    seen = json.loads(context.cursor) if context.cursor else {"files": {}, "requests": 0}
    inbox = semindex_home() / "inbox"
    current = {
        path.name: [path.stat().st_size, path.stat().st_mtime_ns] for path in sorted(inbox.glob("*.jsonl"))
    } if inbox.is_dir() else {}
    changed = sorted(name for name, state in current.items() if seen["files"].get(name) != state)
    if not changed:
        return dg.SkipReason(f"no new or changed files in {inbox}")
    version = active_version(open_database())
    if version is None:
        return dg.SkipReason("no active embedding version yet: run `semindex run` first")
    requests = seen["requests"] + 1
    context.update_cursor(json.dumps({"files": current, "requests": requests}))
    return dg.RunRequest(
        run_key=f"inbox-{requests}",
        partition_key=version.version_key,
        tags={"semindex/inbox_files": ",".join(changed)[:200]},
    )
