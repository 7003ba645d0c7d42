"""Running the code location from the command line: Dagster's home on the semindex database, and the
main job executed in-process against it, so its runs show in `semindex dev` afterwards."""

from __future__ import annotations

import json
import os
from pathlib import Path

from semindex import settings
from semindex.database import open_database, resolve_database_url, sqlalchemy_psycopg2_url
from semindex.lifecycle import DEFAULT_VERSION_KEY, ensure_registered

PARTITIONS_NAME = "embedding_versions"


def prepare_dagster_home() -> Path:
    """DAGSTER_HOME under SEMINDEX_HOME, storing runs and events in the semindex PostgreSQL.

    The URL is written as postgresql+psycopg2://: under SQLAlchemy 2.1 dagster-postgres would pick
    psycopg 3 for a bare postgresql:// URL and every run would fail.
    """
    home = settings.semindex_home() / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    url = sqlalchemy_psycopg2_url(resolve_database_url())
    config = (
        "# Written by semindex; edits are overwritten.\n"
        "storage:\n"
        "  postgres:\n"
        f"    postgres_url: {json.dumps(url)}\n"
        "telemetry:\n"
        "  enabled: false\n"
    )
    path = home / "dagster.yaml"
    if not path.exists() or path.read_text() != config:
        path.write_text(config)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _instance():
    import dagster as dg

    prepare_dagster_home()
    return dg.DagsterInstance.get()


def run_asset(asset_name: str, config: dict):
    """Materialize one unpartitioned asset with its config, recorded in Dagster's storage."""
    import dagster as dg

    open_database()  # before importing Dagster: an unreachable server is reported at once
    from semindex_app import definitions

    job = definitions.defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=_instance(),
        run_config={**definitions.RUN_LOGGING, "ops": {asset_name: {"config": config}}},
        asset_selection=[dg.AssetKey(asset_name)],
        raise_on_error=False,
    )


def index_pipeline_job():
    """The main job, by import path: the multiprocess executor's step processes rebuild it from here."""
    from semindex_app import definitions

    return definitions.defs.resolve_job_def("index_pipeline")


def run_index_pipeline(
    version_key: str = DEFAULT_VERSION_KEY, run_config: dict | None = None, *, workers: int = 1, torch_threads: int = 0
):
    """Materialize the whole graph (with its checks) for one embedding version.

    One worker: in this process. N workers: the embeddings asset runs N claiming steps, and the run
    uses Dagster's multiprocess executor (at most N steps at once), so they run in N processes, each
    with max(1, cores // N) torch threads unless `torch_threads` says otherwise."""
    ensure_registered(open_database(), version_key)  # before importing Dagster: fails fast, saying why
    import dagster as dg

    from semindex_app import definitions

    instance = _instance()
    if not instance.has_dynamic_partition(PARTITIONS_NAME, version_key):
        instance.add_dynamic_partitions(PARTITIONS_NAME, [version_key])
    job = definitions.defs.resolve_job_def("index_pipeline")
    if workers <= 1 and not torch_threads:
        return job.execute_in_process(
            instance=instance, partition_key=version_key, run_config=run_config or {}, raise_on_error=False
        )
    config = {**definitions.RUN_LOGGING, **(run_config or {})}
    ops = dict(config.get("ops", {}))
    embeddings_config = dict(ops.get("embeddings", {}).get("config", {}))
    embeddings_config.update(workers=max(1, workers), torch_threads=torch_threads)
    config["ops"] = {**ops, "embeddings": {"config": embeddings_config}}
    if workers <= 1:
        return job.execute_in_process(instance=instance, partition_key=version_key, run_config=config, raise_on_error=False)
    config["execution"] = {"config": {"multiprocess": {"max_concurrent": workers}}}
    return dg.execute_job(
        dg.reconstructable(index_pipeline_job), instance=instance, run_config=config,
        tags={"dagster/partition": version_key}, raise_on_error=False,
    )


def forget_partition(version_key: str) -> None:
    """Remove a retired version's partition from Dagster, so the UI stops offering it."""
    instance = _instance()
    if instance.has_dynamic_partition(PARTITIONS_NAME, version_key):
        instance.delete_dynamic_partition(PARTITIONS_NAME, version_key)
