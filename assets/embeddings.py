import dagster as dg

from semindex import embeddings as stage

from ..resources import EncoderResource, PostgresResource
from .chunks import chunks
from .metadata import materialization
from .partitions import embedding_versions


class EmbeddingsConfig(dg.Config):
    batch_size: int = 1024
    """Chunks per backfill batch; one watermark commit per batch bounds the work a kill can lose."""


@dg.asset(
    deps=[chunks],
    partitions_def=embedding_versions,
    kinds={"postgres", "pgvector", "pytorch"},
    group_name="index_pipeline",
    description="Vectors per chunk for one embedding version, backfilled in resumable batches; texts already embedded are never re-encoded.",
)
def embeddings(
    context: dg.AssetExecutionContext, config: EmbeddingsConfig, postgres: PostgresResource, encoders: EncoderResource
) -> dg.MaterializeResult:
    return materialization(stage.embeddings_stage(
        postgres.database(), context.partition_key, batch_size=config.batch_size, load=encoders.load,
        progress_emit=context.log.info,
    ))
