import dagster as dg

from semindex.partial_indexes import HotSourceBand, partial_index_stage

from ..resources import PostgresResource
from .indexes import HnswConfig, hnsw_index
from .metadata import materialization
from .partitions import embedding_versions
from .retained_size_projection import retained_size_projection


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
    band = HotSourceBand(config.min_rows, config.max_share, config.max_sources)
    return materialization(partial_index_stage(postgres.database(), context.partition_key, band, config.parameters()))
