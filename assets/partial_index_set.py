import time

import dagster as dg

from assets.indexes import HnswConfig, hnsw_index
from assets.metadata import stage_metadata
from assets.partitions import embedding_versions
from assets.retained_size_projection import retained_size_projection
from resources import PostgresResource
from semindex.embeddings import get_version
from semindex.indexes import HnswParameters
from semindex.partial_indexes import HotSourceBand, sync_partial_indexes


class PartialIndexSetConfig(HnswConfig):
    min_rows: int = 10_000
    """A source needs at least this many vectors before a partial graph beats the exact scan."""
    max_share: float = 0.10
    """...and at most this share of the version's vectors, or the version's own graph serves it well."""
    max_sources: int = 8


@dg.asset(
    deps=[hnsw_index, retained_size_projection],
    partitions_def=embedding_versions,
    kinds={"postgres", "pgvector"},
    group_name="index_pipeline",
    description="Partial HNSW indexes for hot sources in the medium-large band; created on entry, dropped on exit. "
    "Skipped in JSONB mode (no pgvector).",
)
def partial_index_set(context: dg.AssetExecutionContext, config: PartialIndexSetConfig, postgres: PostgresResource) -> dg.MaterializeResult:
    db = postgres.database()
    version = get_version(db, context.partition_key)
    started = time.monotonic()
    report = sync_partial_indexes(
        db,
        version,
        HotSourceBand(config.min_rows, config.max_share, config.max_sources),
        HnswParameters(config.m, config.ef_construction, config.maintenance_work_mem),
    )
    if report.skipped:
        context.log.info(f"partial HNSW indexes of {version.version_key}: {report.skipped}")
    return dg.MaterializeResult(
        metadata=stage_metadata(
            row_count=len(report.members),
            added=len(report.created),
            changed=0,
            removed=len(report.dropped),
            seconds=time.monotonic() - started,
            work_rows=sum(member["rows"] for member in report.members if member["index"] in report.created),
            members=dg.MetadataValue.json(report.members),
            dropped=dg.MetadataValue.json(report.dropped),
            **({"action": report.skipped} if report.skipped else {}),
        )
    )
