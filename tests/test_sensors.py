"""Sensors and schedules, evaluated with build_sensor_context / build_schedule_context against a real
database and a real (test) Dagster instance."""

import dagster as dg

from semindex_app.resources import PostgresResource
from semindex import embeddings
from semindex import lifecycle
from semindex_app.sensors import MAX_BACKFILL_ATTEMPTS, backoff_seconds, inbox_sensor, next_backfill_attempt, version_backfill_sensor
from tests.conftest import sample_records, write_jsonl
from tests.serving import serve


def test_inbox_sensor_requests_one_run_per_new_inbox_state(db, database_url, semindex_home):
    inbox = semindex_home / "inbox"
    inbox.mkdir(exist_ok=True)
    for stale in inbox.glob("*.jsonl"):
        stale.unlink()
    resources = {"postgres": PostgresResource(database_url=database_url)}

    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources=resources)
        assert isinstance(inbox_sensor(context), dg.SkipReason)

        write_jsonl(inbox / "a.jsonl", sample_records(per_stream=1))
        no_version = inbox_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert isinstance(no_version, dg.SkipReason) and "no active embedding version" in no_version.skip_message

        version = lifecycle.register_version(db, "tiny", "hashing-16", 16)
        embeddings.backfill(db, version)
        serve(db, "tiny")

        context = dg.build_sensor_context(instance=instance, resources=resources)
        request = inbox_sensor(context)
        assert isinstance(request, dg.RunRequest)
        assert request.run_key.startswith("inbox-1-") and request.partition_key == "tiny"

        # Same inbox, same cursor: nothing new.
        again = dg.build_sensor_context(instance=instance, resources=resources, cursor=context.cursor)
        assert isinstance(inbox_sensor(again), dg.SkipReason)

        # A changed file gets a fresh run key, so Dagster does not drop it as a duplicate.
        write_jsonl(inbox / "a.jsonl", sample_records(per_stream=2))
        changed = dg.build_sensor_context(instance=instance, resources=resources, cursor=context.cursor)
        second = inbox_sensor(changed)
        assert second.run_key.startswith("inbox-2-") and second.run_key[8:] != request.run_key[8:]

        # Even with the cursor lost, the new state's key differs from every earlier one.
        fresh = inbox_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert fresh.run_key.startswith("inbox-1-") and fresh.run_key != request.run_key
    for path in inbox.glob("*.jsonl"):
        path.unlink()


def _index_pipeline_run(instance, tags: dict, status=dg.DagsterRunStatus.STARTED):
    from semindex_app import definitions

    return instance.create_run_for_job(definitions.defs.resolve_job_def("index_pipeline"), tags=tags, status=status)


def test_a_new_version_gets_its_partition_and_one_backfill_run(db, database_url):
    resources = {"postgres": PostgresResource(database_url=database_url)}
    with dg.instance_for_test() as instance:
        empty = version_backfill_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert not empty.run_requests and "no embedding versions registered" in empty.skip_reason.skip_message

        version = lifecycle.register_version(db, "fresh", "hashing-16", 16)
        result = version_backfill_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        (request,) = result.run_requests
        assert request.run_key == f"backfill:fresh:{version.version_id}:attempt-1"
        assert request.partition_key == "fresh" and request.tags["semindex/attempt"] == "1"
        (partitions,) = result.dynamic_partitions_requests
        assert list(partitions.partition_keys) == ["fresh"]

        # The daemon launches the run; while it runs, the next ticks request nothing more.
        instance.add_dynamic_partitions("embedding_versions", ["fresh"])
        run = _index_pipeline_run(instance, request.tags)
        for _ in range(2):
            duplicate = version_backfill_sensor(dg.build_sensor_context(instance=instance, resources=resources))
            assert not duplicate.run_requests and not duplicate.dynamic_partitions_requests
            assert "attempt 1 is started" in duplicate.skip_reason.skip_message

        # The run dies (a kill, a lost server): the next tick asks for attempt 2 under a new key,
        # which resumes from the version's watermark; once a run succeeds nothing more is requested.
        instance.report_run_failed(run)
        with _backoff(0):
            retry = version_backfill_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        (again,) = retry.run_requests
        assert again.run_key == f"backfill:fresh:{version.version_id}:attempt-2"
        _index_pipeline_run(instance, again.tags, status=dg.DagsterRunStatus.SUCCESS)
        settled = version_backfill_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert not settled.run_requests and "backfill done" in settled.skip_reason.skip_message


def test_failed_backfills_are_retried_with_backoff_and_bounded_attempts(db, database_url):
    resources = {"postgres": PostgresResource(database_url=database_url)}
    with dg.instance_for_test() as instance:
        version = lifecycle.register_version(db, "flaky", "hashing-16", 16)
        instance.add_dynamic_partitions("embedding_versions", ["flaky"])
        tag = {"semindex/backfill": f"flaky:{version.version_id}"}
        instance.report_run_failed(_index_pipeline_run(instance, {**tag, "semindex/attempt": "1"}))

        with _backoff(3600):  # the failure just happened: wait
            waiting = version_backfill_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert not waiting.run_requests and "attempt 1 failed; retrying in" in waiting.skip_reason.skip_message

        keys = []
        with _backoff(0):
            for attempt in range(2, MAX_BACKFILL_ATTEMPTS + 1):
                (request,) = version_backfill_sensor(dg.build_sensor_context(instance=instance, resources=resources)).run_requests
                keys.append(request.run_key)
                run = _index_pipeline_run(instance, request.tags)
                instance.report_run_canceled(run) if attempt % 2 else instance.report_run_failed(run)
            gave_up = version_backfill_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert keys == [f"backfill:flaky:{version.version_id}:attempt-{n}" for n in range(2, MAX_BACKFILL_ATTEMPTS + 1)]
        assert not gave_up.run_requests and f"gave up after {MAX_BACKFILL_ATTEMPTS} attempts" in gave_up.skip_reason.skip_message


def test_backoff_doubles_per_attempt_up_to_a_cap():
    assert [backoff_seconds(n, 60) for n in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert backoff_seconds(30, 60) == 3600
    started = dg.DagsterRunStatus.STARTED
    assert next_backfill_attempt("registered", 0, None, None, 60) == (1, "new version")
    assert next_backfill_attempt("ready", 0, None, None, 60)[0] is None
    assert next_backfill_attempt("backfilling", 1, started, None, 60)[0] is None
    assert next_backfill_attempt("backfilling", 2, dg.DagsterRunStatus.FAILURE, 119.0, 60)[0] is None
    assert next_backfill_attempt("backfilling", 2, dg.DagsterRunStatus.FAILURE, 121.0, 60)[0] == 3


def test_schedules_request_one_run_per_ready_version(db, database_url):
    from datetime import datetime, timezone

    from semindex_app.schedules import nightly_refresh, weekly_index_maintenance

    resources = {"postgres": PostgresResource(database_url=database_url)}
    write = lifecycle.register_version
    ready = [write(db, key, "hashing-16", 16) for key in ("serving", "candidate")]
    write(db, "registered-only", "hashing-16", 16)
    with db.connection() as conn:
        for version in ready:
            conn.execute("UPDATE semindex.embedding_versions SET state = 'ready' WHERE version_id = %s", (version.version_id,))
    tick = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, resources=resources, scheduled_execution_time=tick)
        nightly = nightly_refresh(context)
        weekly = weekly_index_maintenance(context)
    assert sorted(r.partition_key for r in nightly) == ["candidate", "serving"]
    assert {r.run_key for r in nightly} == {f"nightly-refresh:2026-11-22T02:00:{v.version_key}:{v.version_id}" for v in ready}
    assert sorted(r.partition_key for r in weekly) == ["candidate", "serving"]
    assert nightly_refresh.cron_schedule == "0 2 * * *" and weekly_index_maintenance.cron_schedule == "0 3 * * 0"
    assert nightly_refresh.job_name == "index_refresh" and weekly_index_maintenance.job_name == "index_maintenance"


class _backoff:
    """SEMINDEX_BACKFILL_BACKOFF_SECONDS for the duration of a block."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds

    def __enter__(self):
        import os

        self.saved = os.environ.get("SEMINDEX_BACKFILL_BACKOFF_SECONDS")
        os.environ["SEMINDEX_BACKFILL_BACKOFF_SECONDS"] = str(self.seconds)

    def __exit__(self, *exc):
        import os

        if self.saved is None:
            os.environ.pop("SEMINDEX_BACKFILL_BACKOFF_SECONDS", None)
        else:
            os.environ["SEMINDEX_BACKFILL_BACKOFF_SECONDS"] = self.saved
