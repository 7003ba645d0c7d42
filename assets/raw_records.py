import dagster as dg

from semindex import raw_records as stage

from ..resources import PostgresResource
from .metadata import materialization


class RawRecordsConfig(dg.Config):
    paths: list[str] = []
    """JSONL files to ingest. Empty means the bundled sample corpus, the judged sets' documents and every *.jsonl in SEMINDEX_HOME/inbox."""
    force: bool = False
    """Re-read files already ingested with the same content (the upsert keeps it idempotent anyway)."""


@dg.asset(
    kinds={"postgres", "python"},
    group_name="index_pipeline",
    description="Raw records upserted by (connector_instance_id, stream, record_key) with a content hash; bad lines quarantined.",
)
def raw_records(context: dg.AssetExecutionContext, config: RawRecordsConfig, postgres: PostgresResource) -> dg.MaterializeResult:
    return materialization(stage.raw_records_stage(postgres.database(), config.paths, force=config.force, progress_emit=context.log.info))
