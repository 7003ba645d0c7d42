"""Materializing the code location in-process against a test database."""

from __future__ import annotations

import dagster as dg

import definitions
from resources import PostgresResource
from semindex.database import open_database
from semindex.embeddings import register_version

TINY_VERSION = "hash-v1"


def register_tiny_version(database_url: str, version_key: str = TINY_VERSION, dimensions: int = 64):
    return register_version(open_database(database_url), version_key, f"hashing-{dimensions}", dimensions)


def materialize_graph(
    instance: dg.DagsterInstance,
    database_url: str,
    version_key: str,
    run_config: dict | None = None,
    selection=None,
) -> dg.ExecuteInProcessResult:
    if not instance.has_dynamic_partition("embedding_versions", version_key):
        instance.add_dynamic_partitions("embedding_versions", [version_key])
    return dg.materialize(
        [*definitions.all_assets, *definitions.all_checks],
        instance=instance,
        partition_key=version_key,
        resources={"postgres": PostgresResource(database_url=database_url)},
        run_config=run_config or {},
        selection=selection,
        raise_on_error=True,
    )


def raw_records_config(*paths) -> dict:
    return {"ops": {"raw_records": {"config": {"paths": [str(p) for p in paths]}}}}


def metadata(result: dg.ExecuteInProcessResult, asset_name: str) -> dict:
    events = [
        event.materialization
        for event in result.get_asset_materialization_events()
        if event.materialization.asset_key == dg.AssetKey(asset_name)
    ]
    assert len(events) == 1, f"expected one materialization of {asset_name}, got {len(events)}"
    return {key: value.value for key, value in events[0].metadata.items()}


def check_verdicts(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {evaluation.check_name: evaluation.passed for evaluation in result.get_asset_check_evaluations()}
