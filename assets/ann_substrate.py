import dagster as dg

from semindex.ann_substrate.stage import substrate_stage

from ..resources import PostgresResource
from .indexes import hnsw_index
from .metadata import materialization
from .partitions import embedding_versions
from .vector_column import vector_column


@dg.asset(
    deps=[vector_column, hnsw_index],
    partitions_def=embedding_versions,
    kinds={"postgres", "zvec"},
    group_name="index_pipeline",
    description="For a version whose ann_engine is zvec: the next immutable zvec generation, built from the rows "
    "changed since the published one (or from scratch), verified and published with its horizon; nothing for "
    "pgvector versions. Metadata: generation, horizon, documents, pending changes, build seconds, disk bytes.",
)
def ann_substrate(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    return materialization(substrate_stage(postgres.database(), context.partition_key, progress_emit=context.log.info))
