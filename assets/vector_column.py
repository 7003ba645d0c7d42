import dagster as dg

from semindex.vector_column import vector_column_stage

from ..resources import PostgresResource
from .embeddings import embeddings
from .metadata import materialization
from .partitions import embedding_versions


@dg.asset(
    deps=[embeddings],
    partitions_def=embedding_versions,
    kinds={"postgres", "pgvector"},
    group_name="index_pipeline",
    description="The version's vector column (pgvector's vector(d), or jsonb without pgvector) in a table of its own, "
    "checked against its declaration and analysed.",
)
def vector_column(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    return materialization(vector_column_stage(postgres.database(), context.partition_key))
