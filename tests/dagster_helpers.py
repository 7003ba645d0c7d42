"""Materializing the code location in-process against a test database."""

from __future__ import annotations

import dagster as dg

from semindex_app import definitions
from semindex_app.resources import EncoderResource, PostgresResource
from semindex.database import open_database
from semindex.lifecycle import register_version

TINY_VERSION = "hash-v1"
# Every asset up to (not including) the evaluation and the promotion.
INDEX_STAGES = [asset for asset in definitions.all_assets if asset.key.path[-1] not in ("retrieval_evaluation", "serving_version")]


def register_tiny_version(database_url: str, version_key: str = TINY_VERSION, dimensions: int = 64):
    return register_version(open_database(database_url), version_key, f"hashing-{dimensions}", dimensions)


def materialize_graph(
    instance: dg.DagsterInstance,
    database_url: str,
    version_key: str,
    run_config: dict | None = None,
    selection=None,
    *,
    through_promotion: bool = False,
) -> dg.ExecuteInProcessResult:
    """The graph for one version. By default it stops before retrieval_evaluation and
    serving_version: their judged sets need the judged documents, which most test corpora leave out."""
    if not instance.has_dynamic_partition("embedding_versions", version_key):
        instance.add_dynamic_partitions("embedding_versions", [version_key])
    if selection is None and not through_promotion:
        selection = dg.AssetSelection.assets(*INDEX_STAGES)
    return dg.materialize(
        [*definitions.all_assets, *definitions.all_checks],
        instance=instance,
        partition_key=version_key,
        resources={"postgres": PostgresResource(database_url=database_url), "encoders": EncoderResource()},
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
