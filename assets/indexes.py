import dagster as dg

from semindex import indexes as stage

from ..resources import PostgresResource
from .chunks import chunks
from .metadata import materialization
from .partitions import embedding_versions
from .vector_column import vector_column


class HnswConfig(dg.Config):
    m: int = 16
    ef_construction: int = 64
    maintenance_work_mem: str = "256MB"

    def parameters(self) -> stage.HnswParameters:
        return stage.HnswParameters(self.m, self.ef_construction, self.maintenance_work_mem)


@dg.asset(
    deps=[vector_column],
    partitions_def=embedding_versions,
    kinds={"postgres", "pgvector"},
    group_name="index_pipeline",
    description="The version's HNSW index, built serially after loading; CONCURRENTLY once the version serves queries. "
    "Skipped in JSONB mode (no pgvector), where semantic search is a brute-force scan.",
)
def hnsw_index(context: dg.AssetExecutionContext, config: HnswConfig, postgres: PostgresResource) -> dg.MaterializeResult:
    return materialization(stage.hnsw_stage(postgres.database(), context.partition_key, config.parameters(), log_line=context.log.info))


@dg.asset(
    deps=[chunks],
    kinds={"postgres"},
    group_name="index_pipeline",
    description="GIN over the lexical documents (one per record field) by (connector_instance_id, stream, tsvector) "
    "through btree_gin, for scoped BM25 search; documents a database chunked before they existed get theirs first.",
)
def lexical_index(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    return materialization(stage.lexical_stage(postgres.database(), log_line=context.log.info, progress_emit=context.log.info))
