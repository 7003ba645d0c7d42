"""Schedules: the nightly incremental refresh and the weekly index maintenance, one run per live
embedding version (ready and not retired: the serving one, the rollback target and candidates)."""

from __future__ import annotations

import dagster as dg

from semindex.vectors.version import all_versions

from ..resources import PostgresResource


def _live_version_requests(context: dg.ScheduleEvaluationContext, postgres: PostgresResource, purpose: str):
    tick = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M")
    live = [version for version in all_versions(postgres.database()) if version.state == "ready"]
    if not live:
        return dg.SkipReason("no embedding version is ready yet")
    return [
        dg.RunRequest(
            # The tick time and the version id keep every key unique: Dagster drops a repeated key.
            run_key=f"{purpose}:{tick}:{version.version_key}:{version.version_id}",
            partition_key=version.version_key,
            tags={"semindex/purpose": purpose},
        )
        for version in live
    ]


@dg.schedule(job_name="index_refresh", cron_schedule="0 2 * * *", execution_timezone="UTC")
def nightly_refresh(context: dg.ScheduleEvaluationContext, postgres: PostgresResource):
    """New and changed records are re-chunked and only their new chunks embedded, for every live version."""
    return _live_version_requests(context, postgres, "nightly-refresh")


@dg.schedule(job_name="index_maintenance", cron_schedule="0 3 * * 0", execution_timezone="UTC")
def weekly_index_maintenance(context: dg.ScheduleEvaluationContext, postgres: PostgresResource):
    """Statistics refreshed, invalid indexes rebuilt, the hot-source partial index set re-balanced."""
    return _live_version_requests(context, postgres, "index-maintenance")
