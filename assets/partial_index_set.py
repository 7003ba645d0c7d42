import dagster as dg

from semindex.partial_indexes import HotFieldBand, HotSourceBand, partial_index_stage

from ..resources import PostgresResource
from .indexes import HnswConfig, hnsw_index
from .metadata import materialization
from .partitions import embedding_versions
from .retained_size_projection import retained_size_projection


class PartialIndexSetConfig(HnswConfig):
    min_rows: int = HotSourceBand.min_rows
    """A source needs at least this many vectors before a partial graph beats the exact scan."""
    max_share: float = HotSourceBand.max_share
    """...and at most this share of the version's vectors, or the version's own graph serves it well."""
    max_sources: int = HotSourceBand.max_sources
    field_min_rows: int = HotFieldBand.min_rows
    """A field needs at least this many vectors (from the table's statistics) for a graph of its own..."""
    field_max_share: float = HotFieldBand.max_share
    """...and at most this share of the version's vectors."""
    max_fields: int = HotFieldBand.max_fields

    def source_band(self) -> HotSourceBand:
        return HotSourceBand(self.min_rows, self.max_share, self.max_sources)

    def field_band(self) -> HotFieldBand:
        return HotFieldBand(self.field_min_rows, self.field_max_share, self.max_fields)


@dg.asset(
    deps=[hnsw_index, retained_size_projection],
    partitions_def=embedding_versions,
    kinds={"postgres", "pgvector"},
    group_name="index_pipeline",
    description="Partial HNSW indexes for hot sources and hot fields in their bands; created on entry, dropped on exit. "
    "Skipped in JSONB mode (no pgvector).",
)
def partial_index_set(context: dg.AssetExecutionContext, config: PartialIndexSetConfig, postgres: PostgresResource) -> dg.MaterializeResult:
    return materialization(partial_index_stage(
        postgres.database(), context.partition_key, config.source_band(), config.parameters(), config.field_band()))
