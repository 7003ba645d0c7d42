import time

import dagster as dg

from assets.embeddings import embeddings
from assets.metadata import stage_metadata
from assets.partitions import embedding_versions
from resources import PostgresResource
from semindex import semantic_blob
from semindex.embeddings import get_version
from semindex.vector_column import finalize_vector_column


class VectorColumnConfig(dg.Config):
    blob_table: str = semantic_blob.DEFAULT_TABLE
    """A reference-server semantic table to adopt (JSONB embeddings migrated to pgvector in place) when it exists."""


@dg.asset(
    deps=[embeddings],
    partitions_def=embedding_versions,
    kinds={"postgres", "pgvector"},
    group_name="index_pipeline",
    description="The version's typed vector(d) column in a table of its own, checked against its declaration and analysed.",
)
def vector_column(context: dg.AssetExecutionContext, config: VectorColumnConfig, postgres: PostgresResource) -> dg.MaterializeResult:
    db = postgres.database()
    started = time.monotonic()
    adopted = {}
    if semantic_blob.blob_table_exists(db, config.blob_table):
        # The boot migration of seed 000: idempotent, resumable, a no-op once migrated.
        migration = semantic_blob.migrate(db, table=config.blob_table, progress_emit=context.log.info)
        context.log.info(f"{config.blob_table}: {migration.status} ({migration.mode} mode)")
        adopted = {"blob_migration": dg.MetadataValue.json(migration.as_metadata())}
    context.log.info(f"storage mode: {db.vector_mode}")
    report = finalize_vector_column(db, get_version(db, context.partition_key))
    return dg.MaterializeResult(
        metadata=stage_metadata(
            row_count=report.rows,
            added=0,
            changed=0,
            removed=0,
            seconds=time.monotonic() - started,
            work_rows=report.rows,
            storage_mode=db.vector_mode,
            table=report.table,
            column_type=report.column_type,
            total_bytes=dg.MetadataValue.int(report.total_bytes),
            **adopted,
        )
    )
