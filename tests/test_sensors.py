"""The inbox sensor, evaluated with build_sensor_context against a real database."""

import dagster as dg

from resources import PostgresResource
from semindex import embeddings
from sensors import inbox_sensor
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

        version = embeddings.register_version(db, "tiny", "hashing-16", 16)
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
