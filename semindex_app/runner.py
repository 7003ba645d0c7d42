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


def run_index_pipeline(version_key: str = DEFAULT_VERSION_KEY, run_config: dict | None = None):
    """Materialize the whole graph (with its checks) for one embedding version, in this process."""
    ensure_registered(open_database(), version_key)  # before importing Dagster: fails fast, saying why
    from semindex_app import definitions

    instance = _instance()
    if not instance.has_dynamic_partition(PARTITIONS_NAME, version_key):
        instance.add_dynamic_partitions(PARTITIONS_NAME, [version_key])
    job = definitions.defs.resolve_job_def("index_pipeline")
    return job.execute_in_process(
        instance=instance, partition_key=version_key, run_config=run_config or {}, raise_on_error=False
    )


def forget_partition(version_key: str) -> None:
    """Remove a retired version's partition from Dagster, so the UI stops offering it."""
    instance = _instance()
    if instance.has_dynamic_partition(PARTITIONS_NAME, version_key):
        instance.delete_dynamic_partition(PARTITIONS_NAME, version_key)
