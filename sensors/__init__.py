"""Sensors. The inbox sensor starts an index run when JSONL files land in SEMINDEX_HOME/inbox; the
version backfill sensor gives every newly registered embedding version its partition and its
backfill run, and re-requests failed ones with bounded attempts and backoff."""

from __future__ import annotations

import hashlib
import json
import time

import dagster as dg

from semindex import settings
from semindex.vectors.version import active_version, all_versions

from ..assets.partitions import embedding_versions
from ..resources import PostgresResource


def inbox_state() -> dict[str, list[int]]:
    inbox = settings.inbox()
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


# A failed or interrupted backfill is retried this many times in all, waiting base·2^(attempt-1)
# seconds (capped) after the failure; the rerun resumes from the version's watermark.
MAX_BACKFILL_ATTEMPTS = 4
BACKOFF_CAP_SECONDS = 3600
IN_PROGRESS = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
    dg.DagsterRunStatus.MANAGED,
}
RETRYABLE = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def backoff_base_seconds() -> int:
    return settings.backfill_backoff_seconds()


def backoff_seconds(attempts_made: int, base: int) -> int:
    return min(BACKOFF_CAP_SECONDS, base * 2 ** max(0, attempts_made - 1))


def backfill_tag(version_key: str, version_id: int) -> str:
    # The id tells a re-registered key (after retirement) from the old version of the same name.
    return f"{version_key}:{version_id}"


def next_backfill_attempt(state: str, attempts_made: int, latest_status, seconds_since_end: float | None, base: int):
    """The attempt to request now, or None with the reason to wait.

    state is the version's registry state; latest_status the status of its newest backfill run
    (None when it has none); seconds_since_end how long ago that run ended.
    """
    if latest_status is None:
        if state == "ready":
            return None, "already built (outside this sensor)"
        return 1, "new version"
    if latest_status in IN_PROGRESS:
        return None, f"attempt {attempts_made} is {latest_status.value.lower()}"
    if latest_status not in RETRYABLE:
        return None, "backfill done"
    if attempts_made >= MAX_BACKFILL_ATTEMPTS:
        return None, f"gave up after {attempts_made} attempts: fix the cause, then `semindex versions backfill`"
    wait = backoff_seconds(attempts_made, base)
    if seconds_since_end is not None and seconds_since_end < wait:
        return None, f"attempt {attempts_made} failed; retrying in {wait - seconds_since_end:.0f}s"
    return attempts_made + 1, f"attempt {attempts_made} ended {latest_status.value.lower()}"


@dg.sensor(job_name="index_pipeline", minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def version_backfill_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    """One backfill run per registered version, retried with backoff when it fails.

    Dagster remembers run keys forever, so each key carries the version id and the attempt number;
    attempts are counted from the runs themselves (by tag), so a lost cursor cannot repeat a key.
    """
    live = [version for version in all_versions(postgres.database()) if version.state != "retired"]
    new_partitions = [
        version.version_key for version in live
        if not context.instance.has_dynamic_partition(embedding_versions.name, version.version_key)
    ]
    requests, waiting = [], []
    base = backoff_base_seconds()
    for version in live:
        tag = backfill_tag(version.version_key, version.version_id)
        runs_filter = dg.RunsFilter(tags={"semindex/backfill": tag})
        attempts_made = context.instance.get_runs_count(runs_filter)
        latest = context.instance.get_run_records(runs_filter, limit=1)
        status = latest[0].dagster_run.status if latest else None
        since_end = time.time() - latest[0].end_time if latest and latest[0].end_time else None
        attempt, reason = next_backfill_attempt(version.state, attempts_made, status, since_end, base)
        if attempt is None:
            waiting.append(f"{version.version_key}: {reason}")
            continue
        context.log.info(f"requesting backfill attempt {attempt} of {version.version_key} ({reason})")
        requests.append(
            dg.RunRequest(
                run_key=f"backfill:{tag}:attempt-{attempt}",
                partition_key=version.version_key,
                tags={"semindex/backfill": tag, "semindex/attempt": str(attempt)},
            )
        )
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[embedding_versions.build_add_request(new_partitions)] if new_partitions else [],
        skip_reason=None if requests or new_partitions else "; ".join(waiting) or "no embedding versions registered",
    )
