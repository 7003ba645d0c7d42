import dagster as dg

from semindex.retained_size import projection_stage

from ..resources import PostgresResource
from .embeddings import embeddings
from .metadata import materialization


@dg.asset(
    deps=[embeddings],
    kinds={"postgres"},
    group_name="index_pipeline",
    description="Per (connector_instance_id, stream): records, chunks, vectors per version, bytes, dirty flag; the planner's cardinality estimates.",
)
def retained_size_projection(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    return materialization(projection_stage(postgres.database()))
