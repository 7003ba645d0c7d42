import time

import dagster as dg

from assets.embeddings import embeddings
from assets.metadata import stage_metadata
from assets.partitions import embedding_versions
from resources import PostgresResource
from semindex.embeddings import get_version
from semindex.vector_column import finalize_vector_column


@dg.asset(
    deps=[embeddings],
    partitions_def=embedding_versions,
    kinds={"postgres", "pgvector"},
    group_name="index_pipeline",
    description="The version's typed vector(d) column in a table of its own, checked against its declaration and analysed.",
)
def vector_column(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    db = postgres.database()
    started = time.monotonic()
    report = finalize_vector_column(db, get_version(db, context.partition_key))
    return dg.MaterializeResult(
        metadata=stage_metadata(
            row_count=report.rows,
            added=0,
            changed=0,
            removed=0,
            seconds=time.monotonic() - started,
            work_rows=report.rows,
            storage_mode="vector",
            table=report.table,
            column_type=report.column_type,
            total_bytes=dg.MetadataValue.int(report.total_bytes),
        )
    )
