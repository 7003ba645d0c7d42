import dagster as dg

from assets.chunks import chunks
from assets.metadata import stage_metadata
from assets.partitions import embedding_versions
from resources import PostgresResource
from semindex import embeddings as stage


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
def embeddings(context: dg.AssetExecutionContext, config: EmbeddingsConfig, postgres: PostgresResource) -> dg.MaterializeResult:
    db = postgres.database()
    version = stage.get_version(db, context.partition_key)
    report = stage.backfill(db, version, batch_size=config.batch_size, progress_emit=context.log.info)
    return dg.MaterializeResult(
        metadata=stage_metadata(
            row_count=stage.vector_count(db, version),
            added=report.chunks,
            changed=0,
            removed=0,
            seconds=report.seconds,
            work_rows=report.chunks,
            encoded_texts=report.encoded_texts,
            reused_vectors=report.reused_vectors,
            encoder=version.encoder_name,
            encoder_revision=version.encoder_revision,
            dimensions=version.dimensions,
        )
    )
